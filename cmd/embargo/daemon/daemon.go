// Package daemon is the running embargo: it opens and checks the store, loads
// the keys, and wires the SMTP and LMTP listeners, the delivery queue, the
// announce fan-out, the scheduler's tick, the control socket and the HTTP
// listener. It is the one place where the concrete types meet.
//
// A Daemon runs once: New, Start, Stop. The drill and the tests run several
// one after the other on the same store, as a restart would.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/listd"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/senderauth"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/web"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/smtpd"
	"github.com/embargo-project/embargo/workflow"
)

// Options are what the configuration file does not say: the clocks, and the
// seams the drill uses to run the real daemon on a virtual clock. The zero
// value is production.
type Options struct {
	// Logger receives the daemon's log. Default: discard.
	Logger *slog.Logger
	// Version names the running build in the log and in /metrics.
	Version string

	// Now is the wall clock. Default time.Now; the drill gives a virtual one.
	Now func() time.Time
	// Mono is a monotonic clock (elapsed time since any origin) that moves
	// with Now: the tick compares the two to see a jumping wall clock.
	// Default: Go's monotonic clock.
	Mono func() time.Duration

	// Relay replaces the configured relay: the drill keeps what is sent.
	// DKIM signing, when configured, still applies.
	Relay queue.Relay
	// MemberKeys, when set, are the members' public keys, in place of those
	// read from keys_dir (the drill makes a key pair for each member).
	MemberKeys *keys.Keyring
	// NoTick leaves the scheduler's tick to the caller (Tick); TickSpec is
	// its cron schedule otherwise, default every minute.
	NoTick   bool
	TickSpec string
	// Throwaway marks a store that is thrown away afterwards (a drill's, in
	// a temporary directory): its commits are not synced to disk. Never for
	// a real store, whose every 250 rests on the sync
	// (docs/threat-model.md A1).
	Throwaway bool
	// Concurrency is how many deliveries run at once; default the queue's.
	Concurrency int
	// MinBackoff is the shortest retry interval of the queue, and LiftGrace
	// how long the announcement waits after the distributors were told
	// "embargo lifted"; zero takes the queue's and listd's defaults.
	MinBackoff time.Duration
	LiftGrace  time.Duration

	// Commands are the read-only admin commands the control socket runs,
	// each in one read transaction (the command line's listings). The
	// daemon adds "members list" (the roster in force).
	Commands map[string]ReadCommand

	// Load reads the configuration again for Reload (SIGHUP), with the
	// command line's overrides; nil reloads the TLS certificate only.
	Load func() (*config.Config, error)

	// Resolver does the DNS lookups of embargo's own sender authentication
	// ([intake] verify = "own"); default the system's resolver. Tests give
	// a senderauth.Static.
	Resolver senderauth.Resolver

	// hooks are the failpoints of the tests (export_test.go): a field no
	// other package can set.
	hooks testHooks
}

// testHooks are failpoints for the end-to-end tests.
type testHooks struct {
	beforeCommit func(*bolt.Tx) error                 // runs before each inbound commit; an error rolls it back
	panic        func(raw []byte)                     // runs first on every inbound message
	groupCommit  func(*bolt.Tx, int) error            // runs before each group commit, with the group's size; an error fails the group
	freeSpace    func(dir string) (uint64, error)     // replaces statfs on data_dir (diskfree.go)
	send         func(to []string, data []byte)       // runs before the relay takes each outbound message
	tick         func(id workflow.ID)                 // runs before each incident's tick
	job          func(name string)                    // runs before the governance tick and the digest
	batch        func(release string, rcpts []string) // runs before each announce batch is sent

	// The step boundaries of the tests that kill the process at each step
	// (docs/design.md §1): intake, delivery, the release, the control
	// socket's writes, the one-click unsubscribe, the governance tick and
	// the digest.
	opened   func(raw []byte)                       // a message opened, before its transaction
	accepted func(raw []byte)                       // a message committed, before its 250
	ticked   func(id workflow.ID, actions []string) // an incident's tick committed (the release at T)
	rows     queue.TestHooks                        // a claim committed; the relay's 250s before, and after, their outcome's commit
	release  announce.TestHooks                     // a release begun; a batch answered, before and after its commit
	ctl      func(cmd, step string)                 // a control write: "begin" before it, "done" once it returned, before the answer
	jobStep  func(name, step string)                // the governance tick's and the digest's steps (listd.TestHooks.JobStep)
	oneClick func(step string)                      // a one-click unsubscribe: "begin" before its transaction, "done" once committed, before the answer
}

// Daemon is a running embargo.
type Daemon struct {
	cfg *config.Config
	o   Options
	log *slog.Logger

	db       *bolt.DB
	attempts *listd.Attempts // the in-flight file (docs/threat-model.md A6)
	keys     *Keys
	svc      *listd.Service
	auth     *senderauth.Verifier // nil unless [intake] verify = "own"
	worker   *queue.Worker
	subs     *subscriberOps // `embargo subscribers` changes, behind the control socket
	fanout   *announce.Fanout
	metrics  *metrics
	certs    *certHolder           // nil without smtp.tls_cert
	free     *freeSpace            // nil with smtp.min_free_bytes = 0
	inflight *smtpd.InflightBudget // shared by the SMTP and LMTP listeners

	smtp, lmtp                  *smtpd.Server // lmtp: nil without [lmtp]
	web                         *web.Server   // nil without http.listen
	smtpAddr, lmtpAddr, webAddr net.Addr

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closeCtl func()
	reloadMu sync.Mutex // one reload at a time
}

// New prepares a daemon for cfg, which must be complete and resolved
// (config.Load, then Resolve). Nothing is opened before Start.
func New(cfg *config.Config, o Options) *Daemon {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Daemon{cfg: cfg, o: o, log: o.Logger}
}

// NewLogger is the daemon's text log at a level name (debug, info, warn,
// error; an unknown name is info).
func NewLogger(level string, w io.Writer) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// Start opens the store, checks it, and brings up delivery and the
// listeners. On an error everything opened so far is closed again.
func (d *Daemon) Start(ctx context.Context) (err error) {
	if d.db != nil {
		return errors.New("daemon: already started")
	}
	if d.db, err = openStore(d.cfg.DataDir, modeCreate, d.log); err != nil {
		return err
	}
	// After the open, which refuses a store without fsync: a drill's store
	// ticks every virtual minute, and a sync per tick made a three-week
	// rehearsal take minutes.
	d.db.NoSync = d.o.Throwaway
	defer func() {
		if err != nil {
			d.shutdown(context.Background())
		}
	}()
	// Before any mail: a message that was being processed when the last
	// run died is counted now, and one that died with it PoisonDeaths
	// times is quarantined on arrival (docs/threat-model.md A6).
	if d.attempts, err = listd.OpenAttempts(d.db, d.cfg.DataDir, d.o.Now(), d.log.With("component", "listd")); err != nil {
		return err
	}
	relay, err := d.relay()
	if err != nil {
		return err
	}
	if err := d.loadKeys(); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.cancel = cancel
	if err := d.startService(runCtx, relay); err != nil {
		return err
	}
	reads := maps.Clone(d.o.Commands)
	if reads == nil {
		reads = map[string]ReadCommand{}
	}
	reads["members list"] = d.membersCommand
	ctl := &ctlServer{db: d.db, worker: d.worker, fanout: d.fanout, reads: reads, subs: d.subs, now: d.o.Now, log: d.log.With("component", "ctl"), hook: d.o.hooks.ctl}
	if d.closeCtl, err = serveCtl(d.cfg.DataDir, ctl); err != nil {
		return err
	}
	if err := d.startSMTP(); err != nil {
		return err
	}
	if err := d.startLMTP(); err != nil {
		return err
	}
	if err := d.startHTTP(); err != nil {
		return err
	}
	d.log.Info("embargo started", "version", d.o.Version, "config", d.cfg.Source, "data", d.cfg.DataDir,
		"smtp", "smtp://"+d.smtpAddr.String(), "relay", d.cfg.RelayName())
	return nil
}

// Run starts the daemon and stops it when ctx is done.
func (d *Daemon) Run(ctx context.Context) error {
	if err := d.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return d.Stop(stopCtx)
}

// Stop finishes in-flight SMTP sessions (until ctx is done), stops delivery
// and closes the store.
func (d *Daemon) Stop(ctx context.Context) error {
	d.log.Info("embargo stopping")
	return d.shutdown(ctx)
}

func (d *Daemon) shutdown(ctx context.Context) error {
	var errs []error
	if d.web != nil { // before the store closes
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		errs = append(errs, d.web.Shutdown(wctx))
		cancel()
	}
	for _, s := range []*smtpd.Server{d.smtp, d.lmtp} {
		if s == nil {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := s.Shutdown(sctx); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
		cancel()
	}
	if d.cancel != nil {
		d.cancel()
	}
	d.wg.Wait()
	if d.closeCtl != nil {
		d.closeCtl()
	}
	// A clean stop: the next start counts no death (listd.Attempts.Close).
	errs = append(errs, d.attempts.Close())
	if d.db != nil {
		errs = append(errs, d.db.Close())
	}
	return errors.Join(errs...)
}

// Addr is where SMTP listens; LMTPAddr and HTTPAddr are nil when those
// listeners are off.
func (d *Daemon) Addr() net.Addr     { return d.smtpAddr }
func (d *Daemon) LMTPAddr() net.Addr { return d.lmtpAddr }
func (d *Daemon) HTTPAddr() net.Addr { return d.webAddr }

// View runs fn in a read transaction on the store: observers such as the
// drill read incidents and queue rows through it.
func (d *Daemon) View(fn func(tx *bolt.Tx) error) error { return d.db.View(fn) }

// Tick runs the scheduler's sweep at now, for a caller that set NoTick.
func (d *Daemon) Tick(ctx context.Context, now time.Time) error { return d.svc.Tick(ctx, now) }

// Kick wakes the delivery worker, which otherwise waits for its next timer.
func (d *Daemon) Kick() { d.worker.Kick() }

// ListKeys are the lists' key pairs, to check what the daemon signed.
func (d *Daemon) ListKeys() *keys.Keyring {
	var ks []*keys.Key
	for _, n := range config.ListNames() {
		if k := d.keys.Lists[n]; k != nil {
			ks = append(ks, k)
		}
	}
	return keys.NewKeyring(ks...)
}

// startSMTP opens the SMTP listener.
func (d *Daemon) startSMTP() error {
	if err := d.loadTLS(); err != nil {
		return err
	}
	o := d.cfg.SMTP.ServerOptions()
	o.Domain, o.TLSConfig = d.cfg.Domain, d.tlsConfig()
	o = d.withInflight(d.withFreeSpace(o))
	d.smtp = smtpd.New(o, d.handler(), d.log.With("component", "smtpd"))
	l, err := net.Listen("tcp", d.cfg.SMTP.Listen)
	if err != nil {
		return fmt.Errorf("smtp listener: %w", err)
	}
	d.smtpAddr = l.Addr()
	d.goRun("smtp server", func() error { return d.smtp.Serve(l) }, smtpd.ErrServerClosed, net.ErrClosed)
	return nil
}

// goRun runs f until the daemon stops (Stop waits for it), and logs how it
// ended unless that is one of the errors of a normal stop.
func (d *Daemon) goRun(what string, f func() error, stopped ...error) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		err := f()
		for _, s := range stopped {
			if errors.Is(err, s) {
				return
			}
		}
		if err != nil {
			d.log.Error(what+" stopped", "err", err)
		}
	}()
}
