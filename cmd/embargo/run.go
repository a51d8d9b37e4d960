package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/listd"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/web"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/smtpd"
	"github.com/embargo-project/embargo/templates"
)

// daemon is a running embargo: the one place where concrete types meet.
type daemon struct {
	cfg    *Config
	log    *slog.Logger
	db     *bolt.DB
	svc    *listd.Service
	worker *queue.Worker
	smtp   *smtpd.Server
	addr   net.Addr // where SMTP listens

	lmtp     *smtpd.Server // nil without [lmtp] (lmtp.go)
	lmtpAddr net.Addr
	certs    *certHolder // nil without smtp.tls_cert (tls.go)

	web      *web.Server  // nil without http.listen (web.go)
	httpAddr net.Addr     // where HTTP listens
	ops      *opsCounters // counters for /metrics (web.go)
	now      func() time.Time

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closeCtl func()
}

// startOptions are test seams; production leaves them zero.
type startOptions struct {
	now          func() time.Time
	beforeCommit func(*bolt.Tx) error
	backoff      time.Duration        // queue minimum backoff
	liftGrace    time.Duration        // announcement delay after "embargo lifted"
	testPanic    func([]byte)         // poison-message failpoint
	mono         func() time.Duration // a virtual monotonic clock to go with now (drills)
	// The scheduler (tick.go) and the drill (drill.go).
	noTick      bool        // no cron loop: the caller calls svc.Tick itself
	tickSpec    string      // cron spec of the tick; default every minute
	relay       queue.Relay // replaces the configured relay
	concurrency int         // queue deliveries at once; default 4
}

func newLogger(level string, w io.Writer) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// start opens the store, checks it, and brings up delivery and the listeners.
func start(ctx context.Context, cfg *Config, log *slog.Logger) (*daemon, error) {
	return startWith(ctx, cfg, log, startOptions{})
}

func startWith(ctx context.Context, cfg *Config, log *slog.Logger, so startOptions) (*daemon, error) {
	if so.now == nil {
		so.now = time.Now
	}
	db, err := openStore(cfg.DataDir, false)
	if err != nil {
		return nil, err
	}
	d := &daemon{cfg: cfg, log: log, db: db}
	ok := false
	defer func() {
		if !ok {
			d.shutdown()
		}
	}()

	tmpl, err := templates.New(cfg.TemplatesDir)
	if err != nil {
		return nil, err
	}
	relay, err := newRelay(cfg)
	if err != nil {
		return nil, err
	}
	if so.relay != nil {
		relay = so.relay
	}
	if relay, err = withDKIM(cfg, relay, log); err != nil {
		return nil, err
	}
	d.ops = newOpsCounters() // web.go: delivery attempts by result
	relay = d.ops.relay(relay)
	ks, err := loadKeys(cfg, so.now(), true)
	if err != nil {
		return nil, err
	}
	for _, name := range ks.created {
		log.Info("list key generated", "list", name, "fingerprint", ks.lists[name].Fingerprint())
	}
	for _, p := range ks.problemLines() {
		log.Warn("member key problem: " + p)
	}
	d.now = so.now
	roster := buildRoster(cfg)
	annOpts := announceOptions(cfg, roster, ks.lists["announce"], tmpl, so.now, log.With("component", "announce"))
	annOpts.Mono = so.mono
	var fanout *announce.Fanout
	d.svc = listd.New(listd.Options{
		AnnounceOptions: &annOpts,
		Mono:            so.mono,
		Announcer: announcerFunc(func(tx *bolt.Tx, id string, msg []byte, notBefore time.Time) (int, error) {
			return fanout.Release(tx, id, msg, notBefore)
		}),
		ListKey:         ks.lists["security"],
		DistributorsKey: ks.lists["distributors"],
		AnnounceKey:     ks.lists["announce"],
		Channels:        channels(cfg),
		LiftGrace:       so.liftGrace,
		Holidays:        cfg.HolidayDates(),
		Rotation:        rotation(cfg), // tick.go
		Members:         ks.members,
		DB:              db,
		Roster:          roster,
		Templates:       tmpl,
		Project:         cfg.Domain,
		AcksPerDay:      cfg.Intake.AcksPerSenderPerDay,
		Now:             so.now,
		Kick:            func() { d.worker.Kick(); fanout.Kick() },
		Logger:          log.With("component", "listd"),
	})
	if so.testPanic != nil || so.beforeCommit != nil { // tests alone set them (run_test.go)
		d.svc.SetTestHooks(listd.TestHooks{Panic: so.testPanic, BeforeCommit: so.beforeCommit})
	}
	d.worker = queue.New(db, relay, queue.Options{
		Now:         so.now,
		Lifetime:    time.Duration(cfg.Relay.QueueLifetimeHours) * time.Hour,
		MinBackoff:  so.backoff,
		Concurrency: so.concurrency,
		Failed:      d.svc.Alert,
		Sealer:      d.svc,
		Logger:      log.With("component", "queue"),
	})

	s := cfg.SMTP
	if err := d.loadTLS(); err != nil {
		return nil, err
	}
	d.smtp = smtpd.New(smtpd.Options{
		TLSConfig:           d.tlsConfig(),
		Domain:              cfg.Domain,
		MaxMessageBytes:     s.MaxMessageBytes,
		MaxRecipients:       s.MaxRecipients,
		MaxLineLength:       s.MaxLineLength,
		ReadTimeout:         time.Duration(s.ReadTimeoutMinutes) * time.Minute,
		WriteTimeout:        time.Duration(s.WriteTimeoutMinutes) * time.Minute,
		MaxConnections:      s.MaxConnections,
		MaxConnectionsPerIP: s.MaxConnectionsPerIP,
		SessionLifetime:     time.Duration(s.SessionLifetimeMinutes) * time.Minute,
		MaxErrors:           s.MaxErrors,
	}, d.ops.handler(handler{d.svc}), log.With("component", "smtpd"))

	runCtx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := d.worker.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("delivery worker stopped", "err", err)
		}
	}()
	fanout = d.startFanout(runCtx, relay, annOpts)
	d.startTick(runCtx, so) // tick.go: reminders, final notice, release at T, digest

	if d.closeCtl, err = serveCtl(runCtx, cfg.DataDir, db, d.worker, log.With("component", "ctl")); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", s.Listen)
	if err != nil {
		return nil, fmt.Errorf("smtp listener: %w", err)
	}
	d.addr = l.Addr()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := d.smtp.Serve(l); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "closed") {
			log.Error("smtp server stopped", "err", err)
		}
	}()
	if err := d.startLMTP(d.ops.handler(handler{d.svc})); err != nil {
		return nil, err
	}
	if err := d.startHTTP(ks, tmpl, so.now); err != nil { // web.go
		return nil, err
	}
	log.Info("embargo started", "version", version, "config", cfg.source, "data", cfg.DataDir,
		"smtp", "smtp://"+l.Addr().String(), "relay", relayName(cfg))
	ok = true
	return d, nil
}

// Stop finishes in-flight SMTP sessions, stops delivery and closes the store.
func (d *daemon) Stop() error {
	d.log.Info("embargo stopping")
	return d.shutdown()
}

func (d *daemon) shutdown() error {
	var errs []error
	if err := d.stopHTTP(); err != nil { // web.go: before the store closes
		errs = append(errs, err)
	}
	if d.smtp != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := d.smtp.Shutdown(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
		cancel()
	}
	if err := d.stopLMTP(); err != nil {
		errs = append(errs, err)
	}
	if d.cancel != nil {
		d.cancel()
	}
	d.wg.Wait()
	if d.closeCtl != nil {
		d.closeCtl()
	}
	if d.db != nil {
		errs = append(errs, d.db.Close())
	}
	return errors.Join(errs...)
}

func channels(cfg *Config) []listd.Channel {
	var out []listd.Channel
	for _, ch := range cfg.Channels {
		tag := ch.SubjectTag
		if tag == "" {
			tag = "[" + cfg.Domain + "]"
		}
		out = append(out, listd.Channel{Address: strings.ToLower(ch.Address), Tag: tag})
	}
	return out
}

func buildRoster(cfg *Config) *lists.Roster {
	r := &lists.Roster{}
	for _, n := range knownLists {
		l := cfg.Lists[n]
		r.Lists = append(r.Lists, lists.List{Name: lists.Name(n), Address: l.Address, Encryption: l.Encryption, OuterSubject: l.OuterSubject})
	}
	for _, m := range cfg.Members {
		r.Members = append(r.Members, lists.Member{Email: m.Email, Name: m.Name, Roles: m.Roles, Fingerprint: m.Fingerprint})
	}
	return r
}

func relayName(cfg *Config) string {
	if cfg.Relay.URL == "" {
		return "maildir://" + filepath.Join(cfg.DataDir, "outbox")
	}
	// Never log credentials.
	if t, err := parseRelayURL(cfg.Relay.URL); err == nil && t.Maildir == "" {
		if i := strings.Index(cfg.Relay.URL, "@"); i >= 0 {
			scheme, _, _ := strings.Cut(cfg.Relay.URL, "://")
			return scheme + "://" + cfg.Relay.URL[i+1:]
		}
	}
	return cfg.Relay.URL
}

func newRelay(cfg *Config) (queue.Relay, error) {
	u := cfg.Relay.URL
	if u == "" {
		u = "maildir://" + filepath.Join(cfg.DataDir, "outbox")
	}
	helo := cfg.Relay.Helo
	if helo == "" {
		helo = cfg.Domain
	}
	return queue.NewRelay(u, queue.RelayOptions{HeloName: helo})
}

// announcerFunc adapts the fan-out, made after the service, to listd.Announcer.
type announcerFunc func(tx *bolt.Tx, id string, msg []byte, notBefore time.Time) (int, error)

func (f announcerFunc) Release(tx *bolt.Tx, id string, msg []byte, notBefore time.Time) (int, error) {
	return f(tx, id, msg, notBefore)
}

// handler adapts listd to smtpd's Handler: smtpd declares its types with the
// standard library only, listd does not import smtpd.
type handler struct{ svc *listd.Service }

func (h handler) Recipient(ctx context.Context, from, rcpt string) error {
	return h.svc.Recipient(ctx, from, rcpt)
}

func (h handler) Handle(ctx context.Context, env smtpd.Envelope, msg []byte) error {
	return h.svc.Handle(ctx, listd.Envelope{From: env.From, To: env.To, SMTPUTF8: env.SMTPUTF8, SessionID: env.SessionID}, msg)
}
