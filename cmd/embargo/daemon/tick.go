package daemon

import (
	"context"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/cron"
)

// startTick runs the scheduler's tick (daemon/cron) until the daemon stops:
// once at start (what fell due while it was down goes out at once), then
// every minute, each sweep at Options.Now. Stop waits for a sweep in
// progress before the store closes.
func (d *Daemon) startTick(ctx context.Context) {
	if d.o.NoTick {
		return
	}
	log := d.log.With("component", "tick")
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		err := cron.Run(ctx, cron.Options{Spec: d.o.TickSpec, Now: d.o.Now, AtStart: true, Logger: log}, func(ctx context.Context, now time.Time) {
			if err := d.svc.Tick(ctx, now); err != nil && ctx.Err() == nil {
				log.Error("tick", "err", err)
			}
		})
		if err != nil {
			log.Error("tick not started", "err", err)
		}
	}()
}
