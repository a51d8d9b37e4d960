package main

import (
	"context"
	"github.com/embargo-project/embargo/cmd/embargo/config"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/cron"
	"github.com/embargo-project/embargo/workflow"
)

// rotation is the configured on-call rotation for listd.
func rotation(cfg *config.Config) workflow.Rotation {
	return workflow.Rotation{Members: cfg.OnCall.Rotation, Start: cfg.OnCall.Start.Time}
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
