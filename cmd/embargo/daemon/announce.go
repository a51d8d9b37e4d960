package daemon

import (
	"context"
	"errors"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/pipeline"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/web"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/smtpd"
	"github.com/embargo-project/embargo/templates"
)

// announceOptions configures the announce list: subscription by mail and the
// fan-out of releases.
func (d *Daemon) announceOptions(roster *lists.Roster, tmpl *templates.Set) announce.Options {
	o := listOptions(d.cfg, roster, tmpl, d.keys.Lists[config.Announce])
	o.Now, o.Mono = d.o.Now, d.o.Mono
	o.Logger = d.log.With("component", "announce")
	return o
}

// listOptions is what the configuration says about the announce list: the
// daemon's and the offline `embargo subscribers` commands' alike.
func listOptions(cfg *config.Config, roster *lists.Roster, tmpl *templates.Set, key *keys.Key) announce.Options {
	o := announce.Options{
		List:    roster.List(lists.Announce),
		Project: cfg.Project,
		Key:     key,
		Render:  tmpl.Render,
		IsOurs:  roster.IsOurs,
	}
	if cfg.HTTP.BaseURL != "" {
		o.UnsubscribeURL = cfg.HTTP.BaseURL + "/unsubscribe/"
	}
	// RFC 8058: each copy carries its subscriber's own one-click URI
	// (config.Config.OneClick checks that base_url is an https origin).
	if cfg.OneClick() {
		o.OneClick, o.OneClickBase = true, cfg.HTTP.BaseURL
	}
	return o
}

// startFanout runs the announce fan-out worker until runCtx ends. A release
// it holds (a clock jump, a message the key did not sign, a refused
// message) alerts the SRC, with how to resume it (`embargo release resume`,
// release.go).
func (d *Daemon) startFanout(runCtx context.Context, relay queue.Relay, o announce.Options) *announce.Fanout {
	o.Held = func(tx *bolt.Tx, j announce.Job, reason string) error {
		d.log.Warn("announce release held", "release", j.ID, "cause", string(j.HeldFor), "reason", reason)
		if err := d.svc.AlertRelease(tx, j); err != nil {
			return err
		}
		// The alert is queued in the fan-out's transaction: an idle
		// delivery worker waits for a kick, not a timer.
		tx.OnCommit(d.worker.Kick)
		return nil
	}
	d.fanoutSMTP(&o)
	// A batch that kills the process is counted, sent alone, then set
	// aside and the release held (docs/threat-model.md A6).
	o.Guard = d.attempts.Batches()
	o.OnBatch = d.o.hooks.batch // only tests set it (export_test.go)
	f := announce.New(d.db, relay, o)
	f.SetTestHooks(d.o.hooks.release) // only tests set them (export_test.go)
	d.goRun("announce fan-out", func() error { return f.Run(runCtx) }, context.Canceled)
	return f
}

// fanoutSMTP gives the fan-out its own connections to an SMTP relay, with
// the DKIM key and the /metrics counters the relay chain would have
// applied: a release sends each subscriber's copy over a few persistent,
// pipelined connections instead of one connection per transaction. A
// Maildir relay, or the drill's, stays behind the queue's Relay.
func (d *Daemon) fanoutSMTP(o *announce.Options) {
	if d.o.Relay != nil {
		return
	}
	cfg, err := pipeline.ParseURL(d.cfg.RelayURL())
	if err != nil {
		return // maildir://: the queue's relay (NewRelay has checked the URL)
	}
	if d.cfg.DKIM.Selector != "" {
		k, _, err := LoadDKIMKey(d.cfg, false)
		if err != nil {
			// The relay chain loaded it at start; it signs if this fails.
			d.log.Error("announce fan-out: dkim key; releases go through the queue's relay", "err", err)
			return
		}
		o.DKIM = &announce.DKIM{Domain: d.cfg.Domain, Selector: d.cfg.DKIM.Selector, Signer: k}
	}
	cfg.HeloName, cfg.Instance = d.cfg.Helo(), smtpd.InstanceToken() // docs/threat-model.md B9
	o.SMTP = &cfg
	o.Observe = func(result string) {
		if result == "delivered" || result == "partial" {
			d.metrics.sent.Inc()
		}
		d.metrics.deliveries.WithLabelValues(result).Inc()
	}
}

// unsubscribeByToken serves the RFC 8058 one-click endpoint from the
// subscription store.
func (d *Daemon) unsubscribeByToken(ctx context.Context, token string) error {
	now := d.o.Now()
	var unknown bool
	d.oneClickStep("begin")
	err := d.db.Update(func(tx *bolt.Tx) error {
		err := announce.Unsubscribe(tx, token, now)
		if errors.Is(err, announce.ErrUnknownToken) {
			// Commit the clean-up; answer like any other token outside.
			unknown = true
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	d.oneClickStep("done")
	if unknown {
		return web.ErrUnknownToken
	}
	return nil
}

// oneClickStep is the tests' failpoint at a step boundary of a one-click
// unsubscribe (export_test.go WithOneClick); nothing in embargo.
func (d *Daemon) oneClickStep(step string) {
	if d.o.hooks.oneClick != nil {
		d.o.hooks.oneClick(step)
	}
}
