package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/cron"
	"github.com/embargo-project/embargo/workflow"
)

// OnCallConfig is [oncall]: the rotation of SRC members, one week each from
// Monday 00:00 UTC (workflow/oncall.go).
type OnCallConfig struct {
	Rotation []string `toml:"rotation"` // SRC members' addresses, in order
	// Start is a date (YYYY-MM-DD) in the week of the first member's shift;
	// empty counts weeks from 1970-01-05.
	Start string `toml:"start"`
}

func (c *Config) validateOnCall() []string {
	var p []string
	seen := map[string]bool{}
	for i, a := range c.OnCall.Rotation {
		a = strings.ToLower(strings.TrimSpace(a))
		c.OnCall.Rotation[i] = a
		ok := slices.ContainsFunc(c.Members, func(m MemberConfig) bool { return m.Email == a && m.Has("src") })
		switch {
		case !ok:
			p = append(p, fmt.Sprintf("oncall.rotation: %q is not a member with the role \"src\": list [[members]] emails with roles = [\"src\"]", a))
		case seen[a]:
			p = append(p, fmt.Sprintf("oncall.rotation: %q is listed twice; each member takes one week of the rotation", a))
		}
		seen[a] = true
	}
	if c.OnCall.Start != "" {
		if _, err := time.Parse(time.DateOnly, c.OnCall.Start); err != nil {
			p = append(p, fmt.Sprintf("oncall.start: %q is not a date like \"2026-01-05\"", c.OnCall.Start))
		}
	}
	return p
}

// rotation is the configured on-call rotation for listd.
func rotation(cfg *Config) workflow.Rotation {
	r := workflow.Rotation{Members: cfg.OnCall.Rotation}
	if t, err := time.Parse(time.DateOnly, cfg.OnCall.Start); err == nil {
		r.Start = t.UTC()
	}
	return r
}

// startTick runs the scheduler's tick (daemon/cron) until the daemon stops:
// once at start (what fell due while it was down goes out at once), then
// every minute, each sweep at so.now. Stop waits for a sweep in progress
// before the store closes.
func (d *daemon) startTick(ctx context.Context, so startOptions) {
	if so.noTick {
		return
	}
	log := d.log.With("component", "tick")
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		err := cron.Run(ctx, cron.Options{Spec: so.tickSpec, Now: so.now, AtStart: true, Logger: log}, func(ctx context.Context, now time.Time) {
			if err := d.svc.Tick(ctx, now); err != nil && ctx.Err() == nil {
				log.Error("tick", "err", err)
			}
		})
		if err != nil {
			log.Error("tick not started", "err", err)
		}
	}()
}
