package daemon

import (
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/embargo-project/embargo/smtpd"
)

// freeSpaceTTL is how long one statfs answer serves: a flood of MAIL
// commands costs one system call a second, and a disk filling up is seen
// within a second.
const freeSpaceTTL = time.Second

// freeSpace is smtpd's Options.FreeSpace for the store's file system
// ([smtp] min_free_bytes): statfs on data_dir, cached for freeSpaceTTL. An
// error is cached too, and smtpd logs it and accepts (smtpd/storage.go).
type freeSpace struct {
	dir  string
	stat func(dir string) (uint64, error)

	mu   sync.Mutex
	at   time.Time // of the last stat; zero before the first
	free uint64
	err  error
}

func (f *freeSpace) get() (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.at.IsZero() || time.Since(f.at) >= freeSpaceTTL {
		f.free, f.err = f.stat(f.dir)
		f.at = time.Now()
	}
	return f.free, f.err
}

// statfsFree is the space on dir's file system that an unprivileged process
// may use (f_bavail: the blocks reserved for root do not count, the daemon
// does not run as root).
func statfsFree(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}

// withFreeSpace adds the free-space check at MAIL to o, for SMTP and LMTP
// alike (both take mail into the store), unless min_free_bytes is 0. The two
// listeners share one cache.
func (d *Daemon) withFreeSpace(o smtpd.Options) smtpd.Options {
	reserve := d.cfg.SMTP.MinFree()
	if reserve <= 0 {
		return o
	}
	if d.free == nil {
		stat := d.o.hooks.freeSpace
		if stat == nil {
			stat = statfsFree
		}
		d.free = &freeSpace{dir: d.cfg.DataDir, stat: stat}
	}
	o.FreeSpace, o.MinFreeBytes = d.free.get, reserve
	return o
}

// withInflight gives o the process's budget of message bytes in flight
// (docs/threat-model.md C1), one for SMTP and LMTP together: both read
// messages into the same memory. A MAIL or message refused for want of it
// counts in embargo_intake_refused_total{reason="inflight"}.
func (d *Daemon) withInflight(o smtpd.Options) smtpd.Options {
	if d.inflight == nil {
		d.inflight = smtpd.NewInflightBudget(d.cfg.SMTP.MaxInflightBytes, func() {
			d.metrics.refused.WithLabelValues(refusedInflight).Inc()
		})
	}
	o.Inflight = d.inflight
	return o
}
