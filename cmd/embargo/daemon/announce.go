package daemon

import (
	"context"
	"errors"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/web"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/templates"
	"github.com/embargo-project/embargo/workflow"
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
// it holds (a clock jump, a refused message) alerts the SRC.
func (d *Daemon) startFanout(runCtx context.Context, relay queue.Relay, o announce.Options) *announce.Fanout {
	o.Held = func(tx *bolt.Tx, j announce.Job, reason string) error {
		d.log.Warn("announce release held", "release", j.ID, "reason", reason)
		return d.svc.AlertRelease(tx, workflow.ID(j.ID), reason)
	}
	f := announce.New(d.db, relay, o)
	d.goRun("announce fan-out", func() error { return f.Run(runCtx) }, context.Canceled)
	return f
}

// unsubscribeByToken serves the RFC 8058 one-click endpoint from the
// subscription store.
func (d *Daemon) unsubscribeByToken(ctx context.Context, token string) error {
	now := d.o.Now()
	var unknown bool
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
	if unknown {
		return web.ErrUnknownToken
	}
	return nil
}
