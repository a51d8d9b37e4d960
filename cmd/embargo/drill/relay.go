package drill

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"time"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/workflow"
)

// vclock is the drill's virtual clock.
type vclock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *vclock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// mono is the virtual monotonic clock: it moves with the virtual wall clock,
// so the fan-out's clock-jump guard sees no jump where there is none.
func (c *vclock) mono() time.Duration {
	return c.Now().Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC))
}

func (c *vclock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// recorder keeps what the daemon sends, with the virtual time of sending
// and the queue row's kind and incident.
type recorder struct {
	clk  *vclock
	mu   sync.Mutex
	view func(func(*bolt.Tx) error) error // the running daemon's store; nil while down
	out  []sent
}

type sent struct {
	at       time.Time
	to       []string
	data     []byte
	kind     string
	incident string
}

var msgIDHeader = regexp.MustCompile(`(?im)^Message-Id:[ \t]*<([^>\r\n]+)>`)

func (r *recorder) Send(_ context.Context, _ string, to []string, data []byte) error {
	s := sent{at: r.clk.Now(), to: append([]string(nil), to...), data: bytes.Clone(data)}
	r.mu.Lock()
	defer r.mu.Unlock()
	if m := msgIDHeader.FindSubmatch(data); m != nil && r.view != nil {
		// The row is "sending" while the relay has it.
		r.view(func(tx *bolt.Tx) error {
			rows, _ := queue.List(tx)
			for _, row := range rows {
				if row.MessageID == string(m[1]) {
					s.kind, s.incident = row.Kind, row.Incident
				}
			}
			return nil
		})
	}
	r.out = append(r.out, s)
	return nil
}

var _ queue.Relay = (*recorder)(nil)

// settle waits until the queue holds nothing due at the virtual time, then
// turns what the relay got into rows.
func (dr *drill) settle() error {
	if dr.d == nil {
		return nil
	}
	now := dr.clk.Now()
	deadline := time.Now().Add(time.Minute)
	for {
		pending := false
		err := dr.d.View(func(tx *bolt.Tx) error {
			rows, err := queue.List(tx)
			for _, r := range rows {
				if r.State == queue.StateSending || (r.State == queue.StateQueued && !r.NextAttempt.After(now)) {
					pending = true
				}
			}
			return err
		})
		if err != nil {
			return err
		}
		if !pending {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("the delivery queue did not drain within a minute")
		}
		dr.d.Kick()
		time.Sleep(time.Millisecond)
	}
	return dr.collect()
}

// collect turns new relay messages into timeline rows: copies of one message
// sent together make one row.
func (dr *drill) collect() error {
	dr.relay.mu.Lock()
	out := dr.relay.out[dr.seen:]
	dr.seen = len(dr.relay.out)
	dr.relay.mu.Unlock()
	if len(out) == 0 {
		return nil
	}
	if err := dr.learnIncidents(); err != nil {
		return err
	}
	phases := map[string]string{}
	dr.d.View(func(tx *bolt.Tx) error {
		for _, id := range dr.ids {
			if inc, err := incidentdb.Get(tx, id); err == nil {
				phases[string(id)] = inc.Phase.String()
			}
		}
		return nil
	})
	for _, s := range out {
		subject, prot := dr.open(s)
		if subject == "" {
			subject = "(" + s.kind + ")"
		}
		if n := len(dr.rows); n > 0 {
			last := &dr.rows[n-1]
			if last.dir == "out" && last.at.Equal(s.at) && last.kind == s.kind && last.subject == subject && last.prot == prot {
				last.copies++
				last.to = append(last.to, s.to...)
				last.raw = append(last.raw, s.data)
				continue
			}
		}
		inc := s.incident
		if _, ok := workflow.ParseID(inc); !ok {
			inc = ""
			if id, ok := workflow.SubjectTag(subject); ok {
				inc = string(id) // receipts and answers name it in their subject
			}
		}
		dr.rows = append(dr.rows, row{at: s.at, dir: "out", copies: 1, prot: prot, subject: subject, kind: s.kind,
			incident: inc, phase: phases[inc], to: append([]string(nil), s.to...), raw: [][]byte{s.data}})
	}
	return nil
}

// open reads a sent message's real subject, from inside the encryption when
// one of the drill's member keys can decrypt it, and how it was protected.
func (dr *drill) open(s sent) (subject, prot string) {
	o := keys.Options{Now: dr.clk.Now}
	if keys.IsEncrypted(s.data) {
		for _, rcpt := range s.to {
			k := dr.members[strings.ToLower(rcpt)]
			if k == nil {
				continue
			}
			dec, err := keys.Decrypt(s.data, k, dr.lists, o)
			if err != nil {
				continue
			}
			prot = "encrypted"
			if dec.Signature != nil {
				prot = "encrypted, signed"
			}
			return headerSubject(dec.Inner), prot
		}
		return "", "encrypted"
	}
	prot = "plain"
	if bytes.Contains(s.data, []byte("multipart/signed")) {
		prot = "signed (bad)"
		if _, err := keys.Verify(s.data, dr.lists, o); err == nil {
			prot = "signed"
		}
	}
	return headerSubject(s.data), prot
}

func headerSubject(b []byte) string {
	// An unknown charset is an error with a usable entity: keep it.
	e, _ := gomessage.Read(bufio.NewReader(bytes.NewReader(b)))
	if e == nil {
		return ""
	}
	h := mail.Header{Header: e.Header}
	s, err := h.Subject()
	if err != nil {
		return h.Get("Subject")
	}
	return s
}
