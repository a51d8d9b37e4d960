package daemon

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/listd"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/senderauth"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/smtpd"
	"github.com/embargo-project/embargo/templates"
	"github.com/embargo-project/embargo/workflow"
)

// relay is where outbound mail goes: the configured relay (or the drill's),
// DKIM-signing when configured, counted for /metrics.
func (d *Daemon) relay() (queue.Relay, error) {
	d.metrics = newMetrics()
	relay := d.o.Relay
	if relay == nil {
		var err error
		// Instance: a relay that turns out to be our own listener is
		// refused at each connection and logged once (docs/threat-model.md
		// B9); the configuration check refuses the plain cases first.
		opts := queue.RelayOptions{HeloName: d.cfg.Helo(), Instance: smtpd.InstanceToken(), Logger: d.log, Loop: func(err error) {
			d.log.Error("relay.url leads back to this embargo's own listener: mail would loop and stays queued; point relay.url at the MTA that sends mail out", "relay", d.cfg.RelayName(), "err", err)
		}}
		if relay, err = queue.NewRelay(d.cfg.RelayURL(), opts); err != nil {
			return nil, err
		}
	}
	relay, err := withDKIM(d.cfg, relay, d.log)
	if err != nil {
		return nil, err
	}
	if d.o.hooks.send != nil { // only tests set it (export_test.go)
		relay = hookedRelay{relay, d.o.hooks.send}
	}
	return d.metrics.relay(relay), nil
}

// loadKeys loads (or, at the first start, generates) the list keys and the
// members' pinned keys, and logs what an operator should know.
func (d *Daemon) loadKeys() error {
	now := d.o.Now()
	ks, err := loadListKeys(d.cfg, now, true)
	if err != nil {
		return err
	}
	if ks.Members = d.o.MemberKeys; ks.Members == nil {
		if ks.Members, ks.Problems, err = loadMemberKeys(d.cfg, now); err != nil {
			return err
		}
	}
	for _, name := range ks.Created {
		d.log.Info("list key generated", "list", name, "fingerprint", ks.Lists[name].Fingerprint())
	}
	for _, p := range ks.ProblemLines() {
		d.log.Warn("member key problem: " + p)
	}
	d.keys = ks
	return nil
}

// startService builds the list service, the delivery worker and the
// announce fan-out, and starts the worker, the fan-out and the tick.
func (d *Daemon) startService(ctx context.Context, relay queue.Relay) error {
	tmpl, err := templates.New(d.cfg.TemplatesDir)
	if err != nil {
		return err
	}
	roster := Roster(d.cfg)
	set := settings(d.cfg, d.keys.Members, d.keys.Problems, tmpl)
	annOpts := d.announceOptions(roster, tmpl)
	var fanout *announce.Fanout
	d.svc = listd.New(listd.Options{
		AnnounceOptions: &annOpts,
		Mono:            d.o.Mono,
		Announcer: announcerFunc(func(tx *bolt.Tx, id string, msg []byte, notBefore time.Time) (int, error) {
			return fanout.Release(tx, id, msg, notBefore)
		}),
		ListKey:            d.keys.Lists[config.Security],
		DistributorsKey:    d.keys.Lists[config.Distributors],
		AnnounceKey:        d.keys.Lists[config.Announce],
		Channels:           set.Channels,
		LiftGrace:          d.o.LiftGrace,
		Holidays:           set.Holidays,
		Rotation:           set.Rotation,
		Quorum:             set.Quorum,
		LazyConsensus:      set.LazyConsensus,
		RequireEncryption:  set.RequireEncryption,
		RequireBinding:     set.RequireBinding,
		Members:            set.Keys,
		DB:                 d.db,
		Roster:             roster,
		Templates:          set.Templates,
		Project:            d.cfg.Project,
		Record:             d.cfg.RecordProject(),
		AcksPerDay:         d.cfg.Intake.AcksPerSenderPerDay,
		AckCap:             d.cfg.Intake.AckCap(),
		NewPerSender:       d.cfg.Intake.NewPerSender(),
		NewPerClient:       d.cfg.Intake.NewPerClient(),
		TrustedAuthservIDs: d.cfg.Intake.TrustedAuthservIDs,
		Now:                d.o.Now,
		Kick:               func() { d.worker.Kick(); fanout.Kick() },
		Logger:             d.log.With("component", "listd"),
		Observe:            d.metrics.observe,
		AckHeld:            d.metrics.ackHeld,
		DistributorWarning: d.metrics.distWarning,
		Bounced:            d.metrics.bounced,
		Attempts:           d.attempts,
	})
	if d.cfg.Intake.OwnVerification() {
		d.auth = senderauth.New(senderauth.Options{AuthservID: d.cfg.OwnAuthservID(), Resolver: d.o.Resolver})
	}
	// The roster in force: the file's members as signed mail changed them.
	if err := d.svc.Reload(set); err != nil {
		return err
	}
	annOpts.Render = d.svc.Render // the fan-out renders with the templates in force, after a reload too

	if h := d.o.hooks; h.panic != nil || h.beforeCommit != nil || h.groupCommit != nil || h.tick != nil || h.job != nil ||
		h.opened != nil || h.ticked != nil || h.jobStep != nil { // only tests set them (export_test.go)
		d.svc.SetTestHooks(listd.TestHooks{Panic: h.panic, BeforeCommit: h.beforeCommit, GroupCommit: h.groupCommit, Tick: h.tick, Job: h.job,
			Opened: h.opened, Ticked: h.ticked, JobStep: h.jobStep})
	}
	d.worker = queue.New(d.db, relay, queue.Options{
		Now:         d.o.Now,
		Lifetime:    time.Duration(d.cfg.Relay.QueueLifetimeHours) * time.Hour,
		MinBackoff:  d.o.MinBackoff,
		Concurrency: d.o.Concurrency,
		Failed:      d.svc.Alert,
		Sealer:      d.svc,         // each encrypted copy is sealed as it leaves (listd.Service.Seal)
		Claimed:     d.svc.Claimed, // each private-list copy its own bounce address, recorded as it is claimed
		Delivered:   d.metrics.delivered,
		Logger:      d.log.With("component", "queue"),
		Update:      d.svc.Write, // claims and outcomes share intake's group commits
		// A row that kills the process is counted, tried alone, then failed
		// with an alert (docs/threat-model.md A6).
		Guard: d.attempts.Rows(),
	})
	d.worker.SetTestHooks(d.o.hooks.rows) // only tests set them (export_test.go)
	d.goRun("delivery worker", func() error { return d.worker.Run(ctx) }, context.Canceled)
	d.subs = &subscriberOps{db: d.db, o: annOpts, now: d.o.Now, kick: d.worker.Kick}
	if hook := d.o.hooks.ctl; hook != nil { // only tests set it (export_test.go)
		d.subs.chunked = func() { hook(CtlSubscribersImport, "chunk") }
	}
	fanout = d.startFanout(ctx, relay, annOpts)
	d.fanout = fanout // `embargo release resume`, behind the control socket
	d.startTick(ctx)  // reminders, final notice, release at T, digest
	return nil
}

// channels are the outside lists of the release, with their subject tags.
func channels(cfg *config.Config) []listd.Channel {
	var out []listd.Channel
	for _, ch := range cfg.Channels {
		tag := ch.SubjectTag
		if tag == "" {
			tag = "[" + cfg.Project + "]"
		}
		out = append(out, listd.Channel{Address: strings.ToLower(ch.Address), Tag: tag})
	}
	return out
}

// Roster is the configuration's lists and members as the lists package
// routes them.
func Roster(cfg *config.Config) *lists.Roster {
	r := &lists.Roster{}
	for _, n := range config.ListNames() {
		l := cfg.Lists[n]
		r.Lists = append(r.Lists, lists.List{Name: lists.Name(n), Address: l.Address, Encryption: l.Encryption, OuterSubject: l.OuterSubject})
	}
	for _, m := range cfg.Members {
		r.Members = append(r.Members, lists.Member{Email: m.Email, Name: m.Name, Roles: m.Roles, Fingerprint: m.Fingerprint})
	}
	return r
}

// Rotation is the configured on-call rotation.
func Rotation(cfg *config.Config) workflow.Rotation {
	return workflow.Rotation{Members: cfg.OnCall.Rotation, Start: cfg.OnCall.Start.Time}
}

// announcerFunc adapts the fan-out, made after the service, to listd.Announcer.
type announcerFunc func(tx *bolt.Tx, id string, msg []byte, notBefore time.Time) (int, error)

func (f announcerFunc) Release(tx *bolt.Tx, id string, msg []byte, notBefore time.Time) (int, error) {
	return f(tx, id, msg, notBefore)
}

// handler is what the SMTP listener hands accepted mail to: listd, counted
// for /metrics, after our own sender authentication when it is on.
func (d *Daemon) handler() smtpd.Handler {
	return d.metrics.handler(handler{svc: d.svc, auth: d.auth, log: d.log.With("component", "senderauth"), count: d.metrics.senderChecked,
		accepted: d.o.hooks.accepted})
}

// lmtpHandler is handler for the LMTP listener, whose one client is the MTA
// in front: the per-client intake limit does not count it (that MTA's own
// limits apply), and there is no client address to check SPF against, so
// our own sender authentication does not run there (the MTA's, trusted by
// [intake] trusted_authserv_ids, does); fields claiming our authserv-id
// are still removed.
func (d *Daemon) lmtpHandler() smtpd.Handler {
	return d.metrics.handler(handler{svc: d.svc, auth: d.auth, log: d.log.With("component", "senderauth"), count: d.metrics.senderChecked, noClient: true,
		accepted: d.o.hooks.accepted})
}

// handler adapts listd to smtpd's Handler: smtpd declares its types with the
// standard library only, listd does not import smtpd.
type handler struct {
	svc      *listd.Service
	auth     *senderauth.Verifier // nil: [intake] verify = "off"
	log      *slog.Logger
	count    func(result string) // embargo_sender_checks_total
	noClient bool
	accepted func(raw []byte) // a failpoint after the commit, before the 250; nil but in tests (export_test.go)
}

// Recipient judges rcpt with the recipients the transaction accepted before
// it: listd refuses one that cannot share the transaction with them.
func (h handler) Recipient(ctx context.Context, from, rcpt string) error {
	return h.svc.Recipient(ctx, from, rcpt, smtpd.Accepted(ctx)...)
}

func (h handler) Handle(ctx context.Context, env smtpd.Envelope, msg []byte) error {
	e := listd.Envelope{From: env.From, To: env.To, SMTPUTF8: env.SMTPUTF8, SessionID: env.SessionID}
	if !h.noClient {
		e.Client = clientIP(env.RemoteAddr)
	}
	if h.auth != nil {
		msg = h.authenticate(ctx, env, &e, msg)
	}
	err := h.svc.Handle(ctx, e, msg)
	if err == nil && h.accepted != nil {
		h.accepted(msg)
	}
	return err
}

// authenticate is our own sender authentication ([intake] verify = "own",
// docs/design.md §1): DKIM, SPF and DMARC checked on the message as it
// arrived (a signature covers it as sent), then every field claiming our
// authserv-id removed (RFC 8601 §5: only our own results bear our name).
// Its verdict only ever adds trust; nothing here refuses mail.
func (h handler) authenticate(ctx context.Context, env smtpd.Envelope, e *listd.Envelope, msg []byte) []byte {
	var res senderauth.Result
	checked := !h.noClient && e.Client != ""
	if checked {
		res, checked = h.verify(ctx, senderauth.Input{IP: net.ParseIP(e.Client), Helo: env.Helo, MailFrom: env.From, Message: msg}, env.SessionID)
		switch {
		case !checked:
			h.count("unchecked")
		case res.How != "":
			h.count("authenticated")
		default:
			h.count("unauthenticated")
		}
	}
	msg, n := senderauth.Strip(msg, h.auth.AuthservID())
	if n > 0 {
		h.log.Warn("removed Authentication-Results fields claiming our authserv-id", "session", env.SessionID, "fields", n)
	}
	if checked {
		e.Auth = &listd.SenderAuth{Field: res.Field, FromDomain: res.FromDomain, How: res.How}
		h.log.Info("sender checked", "session", env.SessionID, "spf", res.SPF, "dkim", res.DKIM, "dmarc", res.DMARC, "authenticated", res.How != "")
	}
	return msg
}

// verify runs the checks; a panic in them (a hostile signature that a
// library cannot parse) leaves the message unchecked, never unstored
// (docs/threat-model.md A6: a report must not be lost to a check that
// only adds trust; go-smtp would recover the panic and drop the message).
func (h handler) verify(ctx context.Context, in senderauth.Input, session string) (res senderauth.Result, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			h.log.Error("sender authentication panicked; the message is taken unchecked", "session", session, "size", len(in.Message))
			res, ok = senderauth.Result{}, false
		}
	}()
	return h.auth.Verify(ctx, in), true
}

// clientIP is the address of a TCP peer ("192.0.2.1:25" → "192.0.2.1"),
// "" for anything else.
func clientIP(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return ""
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap().String()
	}
	return ""
}

// hookedRelay runs a test's failpoint on each message before the relay
// takes it (the tests of a row that kills the process).
type hookedRelay struct {
	queue.Relay
	hook func(to []string, data []byte)
}

func (r hookedRelay) Send(ctx context.Context, from string, to []string, data []byte) error {
	r.hook(to, data)
	return r.Relay.Send(ctx, from, to, data)
}

// MaxBatch and SendBatch keep a batch relay's batches.
func (r hookedRelay) MaxBatch() int {
	if br, ok := r.Relay.(queue.BatchRelay); ok {
		return br.MaxBatch()
	}
	return 1
}

func (r hookedRelay) SendBatch(ctx context.Context, msgs []queue.Outgoing) []error {
	for _, m := range msgs {
		r.hook(m.To, m.Data)
	}
	return r.Relay.(queue.BatchRelay).SendBatch(ctx, msgs)
}
