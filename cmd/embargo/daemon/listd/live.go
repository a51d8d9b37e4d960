package listd

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/govdb"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/governance"
	"github.com/embargo-project/embargo/templates"
	"github.com/embargo-project/embargo/workflow"
)

// Settings are what a reload changes without a restart (docs/design.md §1,
// §5): who is who and the texts. The lists, their keys, the listeners, the
// relay and the data directory stay what the process started with.
type Settings struct {
	// Members are the configuration file's [[members]]: the bootstrap
	// roster, which the governance record (roster changes by signed mail)
	// overrides entry by entry.
	Members []lists.Member
	// Keys are their pinned keys as loaded from keys_dir, and KeyProblems
	// what loading them found (missing, expired, weak…).
	Keys        *keys.Keyring
	KeyProblems []keys.Problem

	Holidays  []time.Time
	Rotation  workflow.Rotation
	Channels  []Channel
	Templates *templates.Set // nil keeps the templates the Service has

	Quorum        int
	LazyConsensus time.Duration
	// RequireEncryption: commands must be encrypted to the list key as
	// well as signed ([commands] require_encryption).
	RequireEncryption bool
	// RequireBinding: a signed command counts only if its signed text
	// names this list and its incident or proposal ([commands]
	// require_binding).
	RequireBinding bool
}

// rosterSnapshot is one immutable state of what Settings and the governance
// record make: the Options of a view (the effective roster, its keyring,
// the settings), the settings themselves, and the record they were built
// from. Nothing changes a snapshot once it is stored.
type rosterSnapshot struct {
	o     Options
	set   Settings
	state governance.State
}

// current returns a view of the Service on the snapshot in force now. Every
// exported method that reads the roster, the keys or the settings calls it
// first, once, and works on the view only (TestEntryPointsTakeOneSnapshot).
func (s *Service) current() *Service {
	sn := s.sh.live.Load()
	return &Service{o: sn.o, log: s.log, snap: sn, sh: s.sh}
}

// initial is the snapshot of the Options as New got them: the roster as
// given, with no governance record yet (Reload reads it).
func (s *Service) initial() *rosterSnapshot {
	o := s.sh.base
	set := Settings{Keys: o.Members, Holidays: o.Holidays, Rotation: o.Rotation, Channels: o.Channels,
		Templates: o.Templates, Quorum: o.Quorum, LazyConsensus: o.LazyConsensus, RequireEncryption: o.RequireEncryption,
		RequireBinding: o.RequireBinding}
	if o.Roster != nil {
		set.Members = o.Roster.Members
	}
	return &rosterSnapshot{o: o, set: set}
}

// Reload puts set in force: the roster becomes the file's members as the
// governance record (read from the store) changed them, the keyring their
// keys plus the keys pinned by mail, and the governance addresses
// (distributors+apply@, security+GOV-…@) are routed. The next message reads
// the new snapshot; a message being handled finishes with the one it began
// with. On an error (the record cannot be read) nothing changes.
func (s *Service) Reload(set Settings) error {
	s.sh.mu.Lock()
	defer s.sh.mu.Unlock()
	if set.Templates == nil {
		set.Templates = s.sh.live.Load().set.Templates
	}
	sn, err := s.load(set)
	if err != nil {
		return err
	}
	s.sh.live.Store(sn)
	r := sn.o.Roster
	s.log.Info("roster in force", "members", len(r.Members), "src", len(r.WithRole(workflow.RoleSRC)),
		"distributors", len(r.WithRole(workflow.RoleDistributor)), "keys", sn.o.Members.Len(), "quorum", max(sn.o.Quorum, 1),
		"commands_require_encryption", sn.o.RequireEncryption, "commands_require_binding", sn.o.RequireBinding, "changed_by_mail", len(sn.state.Overrides))
	if q, src := max(sn.o.Quorum, 1), len(r.WithRole(workflow.RoleSRC)); q > src {
		s.log.Warn("the quorum is more than the SRC in force (the file with the changes made by mail): no roster change and no irreversible command can pass; lower [governance] quorum",
			"quorum", q, "src", src)
	}
	return nil
}

// refresh rebuilds the snapshot from the settings in force and the
// governance record as committed: after a roster change by mail, so that it
// takes effect for the next message.
func (s *Service) refresh() {
	s.sh.mu.Lock()
	defer s.sh.mu.Unlock()
	sn, err := s.load(s.sh.live.Load().set)
	if err != nil {
		// The change is committed and the next reload or start reads it;
		// meanwhile the roster before it stays in force.
		s.log.Error("roster not rebuilt after a change by mail", "err", err)
		return
	}
	s.sh.live.Store(sn)
	s.log.Info("roster rebuilt after a change by mail", "members", len(sn.o.Roster.Members), "keys", sn.o.Members.Len())
}

// load reads the committed governance record and builds the snapshot of
// set with it. The caller holds sh.mu, so that two rebuilds cannot store
// their results out of order.
func (s *Service) load(set Settings) (*rosterSnapshot, error) {
	var st governance.State
	err := s.sh.base.DB.View(func(tx *bolt.Tx) error {
		var err error
		st, err = govdb.Load(tx)
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.build(set, st), nil
}

// build makes the snapshot of set and the governance record st. It is
// pure apart from parsing the keys pinned by mail.
func (s *Service) build(set Settings, st governance.State) *rosterSnapshot {
	o := s.sh.base
	r := &lists.Roster{Members: governance.Members(set.Members, st), Governance: true}
	if o.Roster != nil {
		r.Lists = o.Roster.Lists
	}
	o.Roster = r
	o.Members = effectiveKeys(r.Members, set, st, s.log)
	o.Holidays, o.Rotation, o.Channels = set.Holidays, set.Rotation, set.Channels
	if set.Templates != nil {
		o.Templates = set.Templates
	}
	o.Quorum, o.LazyConsensus = set.Quorum, set.LazyConsensus
	o.RequireEncryption, o.RequireBinding = set.RequireEncryption, set.RequireBinding
	return &rosterSnapshot{o: o, set: set, state: st}
}

// withState is a view on the roster as st makes it, with the settings of
// this view: what a governance result's mail is rendered with, before the
// change is committed and swapped in.
func (s *Service) withState(st governance.State) *Service {
	sn := s.build(s.settings(), st)
	return &Service{o: sn.o, log: s.log, snap: sn, sh: s.sh}
}

// settings are the view's settings.
func (s *Service) settings() Settings {
	if s.snap == nil {
		return s.sh.live.Load().set
	}
	return s.snap.set
}

// effectiveKeys is the keyring of the roster in force: for each member's
// pinned fingerprint, the key from keys_dir or, for a key pinned by mail,
// the armored key the governance record holds. Keys of nobody on the roster
// (a removed member, a rotated-away key) are left out: they verify nothing.
func effectiveKeys(members []lists.Member, set Settings, st governance.State, log *slog.Logger) *keys.Keyring {
	pinned := governance.PinnedKeys(set.Members, st)
	var ring []*keys.Key
	for _, m := range members {
		if m.Fingerprint == "" {
			continue
		}
		if k, ok := set.Keys.Lookup(m.Fingerprint); ok {
			ring = append(ring, k)
			continue
		}
		armored, ok := pinned[strings.ToUpper(m.Fingerprint)]
		if !ok {
			continue
		}
		ks, err := keys.ReadPublicKeys(strings.NewReader(armored))
		if err != nil {
			log.Error("a key pinned by mail cannot be read", "fingerprint", m.Fingerprint, "err", err)
			continue
		}
		for _, k := range ks {
			if strings.EqualFold(k.Fingerprint(), m.Fingerprint) {
				ring = append(ring, k)
			}
		}
	}
	return keys.NewKeyring(ring...)
}

// govConfig is the governance core's configuration in this view; with
// states, each pinned key's state at now (for /member list).
func (s *Service) govConfig(now time.Time, states bool) governance.Config {
	c := governance.Config{Quorum: max(s.o.Quorum, 1), LazyConsensus: s.o.LazyConsensus, File: s.settings().Members}
	if states {
		c.KeyStates = keyStates(s.settings(), s.o.Members, now)
	}
	return c
}

// keyStates checks every pinned key of a roster at now: the keys of ring
// by keys.Key.Check, the ones that did not load by what loading them found.
func keyStates(set Settings, ring *keys.Keyring, now time.Time) map[string]governance.KeyVerdict {
	out := map[string]governance.KeyVerdict{}
	for _, p := range set.KeyProblems {
		if !p.Warning {
			out[strings.ToUpper(p.Fingerprint)] = governance.KeyVerdict{Fingerprint: p.Fingerprint, Problems: []string{keyProblem(p.Err)}}
		}
	}
	for _, k := range ring.Keys() {
		v := keyVerdict(k, now)
		v.Armored = "" // the states carry no key material
		out[k.Fingerprint()] = v
	}
	return out
}

// keyVerdict is what the governance core needs to know of a key at now.
func keyVerdict(k *keys.Key, now time.Time) governance.KeyVerdict {
	v := governance.KeyVerdict{Fingerprint: k.Fingerprint(), UserIDs: k.UserIDs(), Algorithm: k.Algorithm(), Created: k.Created()}
	if end, ok := k.ExpiresAt(); ok {
		v.Expires = end
	}
	if err := k.Check(now); err != nil {
		v.Problems = []string{keyProblem(err)}
	}
	if pub, err := k.ArmoredPublic(); err == nil {
		v.Armored = string(pub)
	}
	return v
}

// keyProblem is a key error as a sentence, without the package prefix.
func keyProblem(err error) string { return strings.TrimPrefix(err.Error(), "keys: ") }

// MembersList writes the roster in force (MembersText) as the governance
// record in tx and the settings in force make it: `embargo members list`
// through the control socket.
func (s *Service) MembersList(tx *bolt.Tx, w io.Writer) error {
	s = s.current()
	st, err := govdb.Load(tx)
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, MembersText(s.settings(), st, s.o.Now().UTC()))
	return err
}

// MembersText is `embargo members list` (governance.ListText): each member
// of the roster in force, their key's state and expiry, where the entry
// came from, the file entries a removal by mail shadows, and the open
// proposals.
func MembersText(set Settings, st governance.State, now time.Time) string {
	ring := effectiveKeys(governance.Members(set.Members, st), set, st, slog.New(slog.DiscardHandler))
	return governance.ListText(set.Members, st, keyStates(set, ring, now), now)
}

// Render renders a template of the set in force: the announce fan-out's
// bodies follow a reload like the list's own.
func (s *Service) Render(name string, data any) (string, error) {
	return s.current().o.Templates.Render(name, data)
}

// AlertConfig tells the SRC, each copy encrypted to a member's key, that the
// configuration file was not reloaded and why: the roster, the keys and the
// settings in force stay as they were. The text names the file and its
// problems (member addresses, line numbers), never anything of an incident.
// Both are the operator's text, quoted as outside text is (problemBlock).
func (s *Service) AlertConfig(source string, problem error) error {
	s = s.current()
	now := s.o.Now().UTC()
	sec := s.o.Roster.List(lists.Security)
	source = cutLine(EscapeLine(source), maxQuotedLine)
	body := fmt.Sprintf("The configuration %s was not reloaded (%s): it has errors.\n\n%s\n\n"+
		"Nothing changed: the roster, the members' keys and every setting in force stay\n"+
		"as they were, and mail keeps flowing. Fix the file (embargo check --config %s\n"+
		"says what is wrong), then reload again (systemctl reload embargo, or SIGHUP).\n",
		source, workflow.FormatInstant(now), problemBlock(problem.Error(), source), source)
	err := s.o.DB.Update(func(tx *bolt.Tx) error {
		out, err := s.sealedEach(sec, s.committee(), notice{Subject: "[embargo] configuration not reloaded", Body: body, Kind: "alert-reload"}, now)
		if err != nil {
			return err
		}
		return s.enqueue(tx, now, out...)
	})
	if err == nil {
		s.o.Kick()
	}
	return err
}

// maxProblemLines is the most lines of a configuration's problems
// AlertConfig quotes (each cut to maxQuotedLine): a file with thousands of
// them still makes a short alert; embargo check lists every one.
const maxProblemLines = 50

// problemBlock quotes the problems of a configuration (config.Error: the
// file's path first, then a line for each; with errors.Join, more) for
// the committee, each line indented (the path starts with "/", and a
// value quoted raw may hold a line break: no line may start with "/",
// docs/threat-model.md E5) and escaped (EscapeLine: a value's escape
// sequences and bidi overrides), at most maxProblemLines of
// maxQuotedLine bytes.
func problemBlock(problem, source string) string {
	lines := strings.Split(strings.TrimSpace(problem), "\n")
	more := len(lines) - maxProblemLines
	lines = lines[:min(len(lines), maxProblemLines)]
	for i, l := range lines {
		lines[i] = "  " + cutLine(EscapeLine(l), maxQuotedLine)
	}
	if more > 0 {
		lines = append(lines, fmt.Sprintf("  (%d more lines: embargo check --config %s lists them all)", more, source))
	}
	return strings.Join(lines, "\n")
}
