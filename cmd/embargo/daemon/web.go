package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/config"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/web"
	"github.com/embargo-project/embargo/workflow"
	"github.com/embargo-project/embargo/workflow/record"
)

// startHTTP opens the HTTP listener when http.listen is set.
func (d *Daemon) startHTTP() error {
	h := d.cfg.HTTP
	if h.Listen == "" {
		return nil
	}
	keyMap := map[string][]byte{}
	for _, name := range config.ListNames() {
		k := d.keys.Lists[name]
		if k == nil {
			continue
		}
		arm, err := k.ArmoredPublic()
		if err != nil {
			return fmt.Errorf("%s list key: %w", name, err)
		}
		keyMap[d.cfg.Lists[name].Address] = arm
	}
	l, err := net.Listen("tcp", h.Listen)
	if err != nil && d.cfg.IsEmbeddedDefault() {
		// The development default's fixed port may be taken (a second
		// dev daemon, or tests running side by side): HTTP is optional, so
		// the daemon goes on without it. A configured listener must bind.
		d.log.Warn("http listener not started", "listen", h.Listen, "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("http listener: %w", err)
	}
	base := h.BaseURL
	if base == "" {
		base = "http://" + l.Addr().String()
	}
	d.web = web.New(web.Options{
		Logger:      d.log.With("component", "http"),
		Now:         d.o.Now,
		BaseURL:     base,
		Project:     d.cfg.Project,
		Version:     d.o.Version,
		Health:      d.storeHealth,
		Stats:       d.webStats,
		Keys:        keyMap,
		Unsubscribe: d.unsubscribeByToken,
		Advisories:  d.webAdvisories,
		MetricsFrom: config.Prefixes(h.MetricsFrom),
		Registry:    d.metrics.reg,
	})
	d.webAddr = l.Addr()
	d.goRun("http server", func() error { return d.web.Serve(l) }, http.ErrServerClosed)
	d.log.Info("http listening", "http", "http://"+l.Addr().String(), "base_url", base)
	return nil
}

// storeHealth is /healthz: the store answers a read transaction (bbolt
// refuses one once the database is closed).
func (d *Daemon) storeHealth(ctx context.Context) error {
	return d.db.View(func(*bolt.Tx) error { return nil })
}

// webStats reads the gauges of /metrics from the store.
func (d *Daemon) webStats(ctx context.Context) (web.Snapshot, error) {
	holidays := d.cfg.HolidayTimes()
	var incs []workflow.Incident
	var counts queue.Counts
	err := d.db.View(func(tx *bolt.Tx) error {
		var err error
		if incs, err = incidentdb.List(tx); err != nil {
			return err
		}
		counts, err = queue.Stats(tx)
		return err
	})
	if err != nil {
		return web.Snapshot{}, err
	}
	t := d.o.Now()
	snap := web.Snapshot{
		Queued:       counts.Queued,
		Sending:      counts.Sending,
		Failed:       counts.Failed,
		OldestQueued: counts.Oldest,
		// Every open phase is reported, zero included, so that the series
		// do not come and go.
		OpenIncidents:   map[string]int{},
		DeadlinesMissed: map[string]int{},
	}
	for _, p := range []workflow.Phase{workflow.PhaseTriage, workflow.PhaseFix, workflow.PhaseEmbargo, workflow.PhaseDisclosed} {
		snap.OpenIncidents[p.String()] = 0
	}
	for _, inc := range incs {
		if inc.Phase == workflow.PhaseClosed || inc.Phase == workflow.PhaseUnset {
			continue
		}
		snap.OpenIncidents[inc.Phase.String()]++
		for _, dl := range workflow.Deadlines(inc, holidays) {
			if dl.Open() && !dl.Due.IsZero() && t.After(dl.Due) {
				snap.DeadlinesMissed[dl.Name]++
			}
		}
	}
	return snap, nil
}

// publishable: disclosed (or closed after disclosure) at or before now. An
// incident closed without a disclosure (not a vulnerability, duplicate…) has
// no DisclosedAt and is never published.
func publishable(inc *workflow.Incident, now time.Time) bool {
	return (inc.Phase == workflow.PhaseDisclosed || inc.Phase == workflow.PhaseClosed) &&
		!inc.DisclosedAt.IsZero() && !inc.DisclosedAt.After(now)
}

// webAdvisories lists the published advisories from the store.
func (d *Daemon) webAdvisories(ctx context.Context) ([]web.Advisory, error) {
	var incs []workflow.Incident
	if err := d.db.View(func(tx *bolt.Tx) error {
		var err error
		incs, err = incidentdb.List(tx)
		return err
	}); err != nil {
		return nil, err
	}
	t := d.o.Now()
	var out []web.Advisory
	for i := range incs {
		inc := &incs[i]
		if !publishable(inc, t) {
			continue
		}
		out = append(out, d.toAdvisory(inc))
	}
	return out, nil
}

// toAdvisory maps a disclosed incident to its public advisory.
func (d *Daemon) toAdvisory(inc *workflow.Incident) web.Advisory {
	a := inc.Advisory
	adv := web.Advisory{
		ID:        string(inc.ID),
		CVEs:      append([]string(nil), inc.CVEs...),
		Summary:   plain(a.Summary),
		Published: inc.DisclosedAt,
		Modified:  inc.DisclosedAt,
		Affected:  plain(a.Affected),
		Fixed:     plain(a.Fixed),
		IssueURL:  plain(a.IssueURL),
		Credits:   plain(a.Credit),
	}
	if inc.Updated.After(adv.Modified) {
		adv.Modified = inc.Updated
	}
	if s := inc.Severity(); s != workflow.SeverityUnset {
		adv.Severity = s.String()
	}
	if c, ok := inc.CVSS(); ok {
		adv.CVSS, adv.Score = c.Vector, c.Score
	}
	// The text as it was mailed: one renderer for the mail and the page.
	text, err := d.svc.AdvisoryText(inc)
	if err != nil {
		d.log.Warn("advisory text not rendered", "incident", inc.ID, "err", err)
	}
	adv.Details = text
	// The OSV record, from the same project metadata as the release's CVE
	// draft (workflow/record).
	p := d.cfg.RecordProject()
	if adv.OSV, err = record.OSVJSON(p, inc); err != nil {
		d.log.Warn("osv record not built", "incident", inc.ID, "err", err)
		adv.OSV = nil
	}
	adv.OSVID = record.OSVID(p, inc.ID)
	return adv
}

// plain drops control and bidirectional-override characters (but line feeds
// and tabs) from a field the SRC set, so that no page can be made to read
// differently from its source.
func plain(s string) string {
	s = strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n")
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t':
			return r
		case unicode.IsControl(r), r >= 0x202A && r <= 0x202E, r >= 0x2066 && r <= 0x2069, r == 0x200E, r == 0x200F, r == 0x061C:
			return -1
		}
		return r
	}, s))
}
