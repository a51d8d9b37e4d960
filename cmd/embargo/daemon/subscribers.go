package daemon

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/templates"
	"github.com/embargo-project/embargo/workflow"
)

// The control commands that change the announce list's subscribers. The
// listings (count, list, export) are read commands of the command line.
const (
	CtlSubscribersAdd    = "subscribers add"
	CtlSubscribersRemove = "subscribers remove"
	CtlSubscribersImport = "subscribers import"
)

// importChunk is how many entries of a listing one transaction applies:
// small enough that inbound mail waits for the store lock no longer than a
// few milliseconds at a time, and a failure midway keeps what committed
// (the import is idempotent: run it again).
const importChunk = 200

// subscriberOps are an operator's changes to the announce list, run inside
// the daemon behind the control socket, or on the store file when it is
// stopped; both build the list's options from the same configuration, so a
// notice is the same either way.
type subscriberOps struct {
	db   *bolt.DB
	o    announce.Options
	now  func() time.Time
	kick func() // the delivery worker, after notices were queued; nil offline
	// chunked is the tests' failpoint once a transaction of an import
	// committed and more follow (export_test.go WithCtl, step "chunk");
	// nil in embargo.
	chunked func()
}

// run answers one command with the text to print.
func (s *subscriberOps) run(cmd string, args []string, payload []byte) (string, error) {
	switch cmd {
	case CtlSubscribersAdd:
		if len(args) != 1 {
			return "", errors.New(`usage: embargo subscribers add ADDRESS (or "Display Name <ADDRESS>")`)
		}
		return s.add(args[0])
	case CtlSubscribersRemove:
		if len(args) != 1 {
			return "", errors.New("usage: embargo subscribers remove ADDRESS")
		}
		return s.remove(args[0])
	case CtlSubscribersImport:
		name := "the listing"
		if len(args) == 1 {
			name = args[0]
		}
		return s.importListing(name, payload)
	}
	return "", fmt.Errorf("unknown command %q", cmd)
}

// sent says where the notices go.
func (s *subscriberOps) sent() string {
	if s.kick == nil {
		return "queued: the daemon sends it when it starts"
	}
	return "sent"
}

func (s *subscriberOps) add(spec string) (string, error) {
	e := announce.EntryOf(spec)
	var oc announce.Outcome
	var why string
	err := s.db.Update(func(tx *bolt.Tx) error {
		now := s.now()
		var msgs []queue.Msg
		var err error
		if oc, why, msgs, err = announce.Add(tx, e, now, s.o); err != nil {
			return err
		}
		return queue.Enqueue(tx, now, msgs...)
	})
	if err != nil {
		return "", err
	}
	switch oc {
	case announce.OutcomeSubscribed:
		s.kicked(1)
		return fmt.Sprintf("%s subscribed to %s; one signed notice %s, saying where advisories come from and how to leave.\n", e.Address, s.o.List.Address, s.sent()), nil
	case announce.OutcomeAlready:
		return fmt.Sprintf("%s is already subscribed; nothing sent.\n", e.Address), nil
	case announce.OutcomeEnabled:
		return fmt.Sprintf("%s was disabled after bounces and receives releases again; nothing sent (it had its notice).\n", e.Address), nil
	}
	return "", errors.New(why)
}

// remove sends nothing: the owner asked the operator, who answers them, or
// the address is dead; a goodbye from an output-only list would be one more
// unexpected mail (and one more bounce). Unsubscribing by one-click or by
// mail confirms itself.
//
// An address that already left is answered OK, saying when and how, as
// `add` answers an address already subscribed: an operator whose first
// remove got no answer (the daemon died after the commit) runs it again
// and learns that it took effect. An address the store never saw leave is
// an error (a typo, most likely).
func (s *subscriberOps) remove(addr string) (string, error) {
	var found, left bool
	var leftAt time.Time
	var how string
	if announce.EntryOf(addr).Name != "" || !strings.Contains(addr, "@") {
		return "", fmt.Errorf("%q is not an address: give it as it is listed by `embargo subscribers list --all`", addr)
	}
	err := s.db.Update(func(tx *bolt.Tx) (err error) {
		if found, err = announce.Remove(tx, addr, s.now()); err != nil || found {
			return err
		}
		leftAt, how, left, err = announce.Left(tx, addr)
		return err
	})
	if err != nil {
		return "", err
	}
	if left {
		return fmt.Sprintf("%s is not on %s: it left on %s (%s); nothing to do.\n", addr, s.o.List.Address, workflow.FormatInstant(leftAt), how), nil
	}
	if !found {
		return "", fmt.Errorf("%s is not on the list (`embargo subscribers list --all` shows every address, in any state)", addr)
	}
	return fmt.Sprintf("%s removed from %s; nothing was sent to it. An import will not add it again; `embargo subscribers add` would.\n", addr, s.o.List.Address), nil
}

func (s *subscriberOps) kicked(n int) {
	if n > 0 && s.kick != nil {
		s.kick()
	}
}

// importListing applies a members listing in transactions of importChunk
// entries, each with its notices.
func (s *subscriberOps) importListing(name string, data []byte) (string, error) {
	l, err := announce.ParseListing(data)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	var total announce.ImportResult
	for i := 0; i < len(l.Entries); i += importChunk {
		chunk := l.Entries[i:min(i+importChunk, len(l.Entries))]
		var res announce.ImportResult
		err := s.db.Update(func(tx *bolt.Tx) error {
			now := s.now()
			var msgs []queue.Msg
			var err error
			if res, msgs, err = announce.Import(tx, chunk, now, s.o); err != nil {
				return err
			}
			return queue.Enqueue(tx, now, msgs...)
		})
		if err != nil {
			return "", fmt.Errorf("%s: stopped at line %d (%d of %d addresses applied, %d subscribed): %w; what was applied stays, and running the import again finishes it without a second notice",
				name, chunk[0].Line, i, len(l.Entries), total.Subscribed, err)
		}
		s.kicked(res.Subscribed)
		total.Subscribed += res.Subscribed
		total.Already += res.Already
		total.Skipped = append(total.Skipped, res.Skipped...)
		if s.chunked != nil && i+importChunk < len(l.Entries) {
			s.chunked()
		}
	}
	return s.importReport(name, l, total), nil
}

func (s *subscriberOps) importReport(name string, l *announce.Listing, r announce.ImportResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: a %s, %s, %s.\n", name, l.Format, nounCount(l.Lines, "line"), nounCount(len(l.Entries), "address"))
	fmt.Fprintf(&b, "  %d subscribed to %s, each with one signed notice (%s) saying how to leave\n", r.Subscribed, s.o.List.Address, s.sent())
	fmt.Fprintf(&b, "  %d already subscribed: nothing sent\n", r.Already)
	if len(r.Skipped) > 0 {
		fmt.Fprintf(&b, "  %d not added (below)\n", len(r.Skipped))
	}
	if len(l.Invalid) > 0 {
		fmt.Fprintf(&b, "  %d lines skipped (below)\n", len(l.Invalid))
	}
	for _, sk := range mergeSkips(l.Invalid, r.Skipped) {
		fmt.Fprintf(&b, "line %d: %s\n", sk.Line, sk.Reason)
	}
	return b.String()
}

// nounCount writes "1 line", "2 lines", "2 addresses".
func nounCount(n int, noun string) string {
	switch {
	case n == 1:
		return "1 " + noun
	case strings.HasSuffix(noun, "s"):
		return fmt.Sprintf("%d %ses", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// mergeSkips lists both kinds of skipped lines in line order.
func mergeSkips(a, b []announce.Skip) []announce.Skip {
	out := make([]announce.Skip, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		if len(b) == 0 || len(a) > 0 && a[0].Line <= b[0].Line {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return out
}

// Subscribers runs `embargo subscribers add|remove|import` (cmd is one of
// the Ctl* names; payload is the listing to import): through the running
// daemon's control socket, which queues the notices and wakes its delivery
// worker, else on the store file, where the notices wait for the next
// start. It returns what to print.
func Subscribers(cfg *config.Config, cmd string, args []string, payload []byte) (string, error) {
	if c := DialCtl(cfg.DataDir); c != nil {
		defer c.Close()
		_, br, err := c.CallWith(cmd, args, payload)
		if err != nil {
			return "", err
		}
		b, err := io.ReadAll(br)
		return string(b), err
	}
	db, err := OpenStore(cfg.DataDir, false)
	if err != nil {
		return "", err
	}
	defer db.Close()
	s, err := offlineSubscriberOps(cfg, db)
	if err != nil {
		return "", err
	}
	return s.run(cmd, args, payload)
}

// offlineSubscriberOps builds the list's options as the daemon does, with
// the announce key that signs the notices.
func offlineSubscriberOps(cfg *config.Config, db *bolt.DB) (*subscriberOps, error) {
	ks, err := loadListKeys(cfg, time.Now(), false)
	if err != nil {
		return nil, err
	}
	key := ks.Lists[config.Announce]
	if key == nil {
		return nil, fmt.Errorf("the announce list has no key yet (%s), and the notices are signed with it: start embargo once, or run `embargo init`, to generate it", cfg.ListKeyPath(config.Announce))
	}
	tmpl, err := templates.New(cfg.TemplatesDir)
	if err != nil {
		return nil, err
	}
	return &subscriberOps{db: db, o: listOptions(cfg, Roster(cfg), tmpl, key), now: time.Now}, nil
}
