package listd

import (
	"encoding/hex"
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
)

// NotePoison is the archive note of a message kept in quarantine because
// processing it failed: a recovered panic, or the deaths of the process
// (docs/threat-model.md A6). `embargo incident quarantine` lists them.
const NotePoison = "poison"

// quarantineKiller keeps a message that was in progress at PoisonDeaths
// deaths of the process, without processing it (docs/threat-model.md A6):
// its bytes are archived with NotePoison, the SRC gets one alert that names
// it by its archive number and SHA-256 (never its content, G6), and the
// sender gets 250 so that its MTA stops sending it. The same bytes for the
// same recipients again (a client that lost our 250) are a duplicate:
// nothing more is archived or sent. A failed commit is a 451, as for any
// message (A1).
func (s *Service) quarantineKiller(env Envelope, raw []byte, sum [32]byte) error {
	now := s.o.Now().UTC()
	seen := seenKey(sum, env.To)
	deaths := s.o.Attempts.Deaths(sum, now)
	var seq uint64
	var dup bool
	err := s.sh.writer.do(func(tx *bolt.Tx) error {
		seq, dup = 0, false // the function may run twice (commit.go)
		if incidentdb.Seen(tx, seen) {
			dup = true
			return nil
		}
		var err error
		seq, err = s.keepPoison(tx, env, raw, sum, now, "poison", map[string]string{
			"deaths": strconv.Itoa(deaths), "sha256": hex.EncodeToString(sum[:]),
		})
		if err != nil {
			return err
		}
		return incidentdb.MarkSeen(tx, seen)
	})
	log := s.log.With("session", env.SessionID, "size", len(raw), "sha256", hex.EncodeToString(sum[:]), "deaths", deaths)
	if err != nil {
		log.Error("a message that killed the process could not be quarantined", "err", err)
		return fmt.Errorf("listd: quarantine: %w", err)
	}
	if dup {
		log.Info("message accepted", "result", "duplicate")
		return nil
	}
	s.o.Kick()
	log.Warn("message quarantined without processing: the process died while it was processed", "message", seq)
	return nil
}

// attemptEnded records that a message's processing ended without a death.
// A suspect that survived is forgotten: it was a bystander of another
// message's death, or of a kill.
func (s *Service) attemptEnded(t *attempt) {
	a := s.o.Attempts
	a.end(t)
	if !t.suspect {
		return
	}
	err := s.sh.writer.do(func(tx *bolt.Tx) error { return a.forget(tx, t.sum) })
	if err != nil {
		// Kept: it is processed alone again next time, and forgotten then.
		s.log.Warn("a suspect message was processed without a death but could not be cleared", "sha256", hex.EncodeToString(t.sum[:]), "err", err)
		return
	}
	a.forgotten(t.sum)
	s.log.Info("a suspect message was processed without a death; cleared", "sha256", hex.EncodeToString(t.sum[:]))
}
