package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/embargo-project/embargo/cmd/embargo/config"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/web"
	"github.com/embargo-project/embargo/smtpd"
	"github.com/embargo-project/embargo/templates"
	"github.com/embargo-project/embargo/workflow"
)

// opsCounters are the process-lifetime counters of /metrics that the store
// does not keep: messages accepted, and delivery attempts by result.
type opsCounters struct {
	in, out    atomic.Uint64
	mu         sync.Mutex
	deliveries map[string]uint64
}

func newOpsCounters() *opsCounters {
	return &opsCounters{deliveries: map[string]uint64{"delivered": 0, "partial": 0, "deferred": 0, "refused": 0}}
}

func (c *opsCounters) delivery(result string) {
	c.mu.Lock()
	c.deliveries[result]++
	c.mu.Unlock()
}

// relay counts each delivery attempt of r by result.
func (c *opsCounters) relay(r queue.Relay) queue.Relay { return countingRelay{r, c} }

type countingRelay struct {
	queue.Relay
	c *opsCounters
}

func (r countingRelay) Send(ctx context.Context, from string, to []string, data []byte) error {
	err := r.Relay.Send(ctx, from, to, data)
	var rcptErr *queue.RcptError
	switch {
	case err == nil:
		r.c.out.Add(1)
		r.c.delivery("delivered")
	case errors.As(err, &rcptErr) && len(rcptErr.Failed) < len(to):
		r.c.out.Add(1)
		r.c.delivery("partial")
	case queue.IsPermanent(err):
		r.c.delivery("refused")
	default:
		r.c.delivery("deferred")
	}
	return err
}

// handler counts the messages h accepted (committed and answered 250).
func (c *opsCounters) handler(h smtpd.Handler) smtpd.Handler { return countingHandler{h, c} }

type countingHandler struct {
	smtpd.Handler
	c *opsCounters
}

func (h countingHandler) Handle(ctx context.Context, env smtpd.Envelope, msg []byte) error {
	err := h.Handler.Handle(ctx, env, msg)
	if err == nil {
		h.c.in.Add(1)
	}
	return err
}

var _ smtpd.Handler = countingHandler{}

// startHTTP opens the HTTP listener when http.listen is set.
func (d *daemon) startHTTP(ks *keyset, tmpl *templates.Set, now func() time.Time) error {
	h := d.cfg.HTTP
	if h.Listen == "" {
		return nil
	}
	prefixes := config.Prefixes(h.MetricsFrom)
	keyMap := map[string][]byte{}
	for _, name := range config.ListNames() {
		k := ks.lists[name]
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
	if err != nil && d.cfg.Source == "embedded default" {
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
	holidays := d.cfg.HolidayTimes()
	d.web = web.New(web.Options{
		Logger:      d.log.With("component", "http"),
		Now:         now,
		BaseURL:     base,
		Project:     d.cfg.Domain,
		Version:     version,
		Health:      d.storeHealth,
		Stats:       d.webStats(now, holidays),
		Keys:        keyMap,
		Unsubscribe: d.unsubscribeByToken,
		Advisories:  d.webAdvisories(tmpl, now),
		MetricsFrom: prefixes,
	})
	d.httpAddr = l.Addr()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := d.web.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("http server stopped", "err", err)
		}
	}()
	d.log.Info("http listening", "http", "http://"+l.Addr().String(), "base_url", base)
	return nil
}

// stopHTTP finishes the requests in flight; it runs before the store closes.
func (d *daemon) stopHTTP() error {
	if d.web == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return d.web.Shutdown(ctx)
}

// storeHealth is /healthz: the store answers a read transaction (bbolt
// refuses one once the database is closed).
func (d *daemon) storeHealth(ctx context.Context) error {
	return d.db.View(func(*bolt.Tx) error { return nil })
}

// webStats reads the numbers of /metrics from the store and the counters.
func (d *daemon) webStats(now func() time.Time, holidays []time.Time) web.Stats {
	return func(ctx context.Context) (web.Snapshot, error) {
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
		t := now()
		snap := web.Snapshot{
			MessagesIn:   d.ops.in.Load(),
			MessagesOut:  d.ops.out.Load(),
			Queued:       counts.Queued,
			Sending:      counts.Sending,
			Failed:       counts.Failed,
			OldestQueued: counts.Oldest,
			Deliveries:   map[string]uint64{},
			// Every open phase is reported, zero included, so that the series
			// do not come and go.
			OpenIncidents:   map[string]int{},
			DeadlinesMissed: map[string]int{},
		}
		for _, p := range []workflow.Phase{workflow.PhaseTriage, workflow.PhaseFix, workflow.PhaseEmbargo, workflow.PhaseDisclosed} {
			snap.OpenIncidents[p.String()] = 0
		}
		d.ops.mu.Lock()
		for k, v := range d.ops.deliveries {
			snap.Deliveries[k] = v
		}
		d.ops.mu.Unlock()
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
}

// publishable: disclosed (or closed after disclosure) at or before now. An
// incident closed without a disclosure (not a vulnerability, duplicate…) has
// no DisclosedAt and is never published.
func publishable(inc *workflow.Incident, now time.Time) bool {
	return (inc.Phase == workflow.PhaseDisclosed || inc.Phase == workflow.PhaseClosed) &&
		!inc.DisclosedAt.IsZero() && !inc.DisclosedAt.After(now)
}

// webAdvisories lists the published advisories from the store.
func (d *daemon) webAdvisories(tmpl *templates.Set, now func() time.Time) func(context.Context) ([]web.Advisory, error) {
	return func(ctx context.Context) ([]web.Advisory, error) {
		var incs []workflow.Incident
		if err := d.db.View(func(tx *bolt.Tx) error {
			var err error
			incs, err = incidentdb.List(tx)
			return err
		}); err != nil {
			return nil, err
		}
		t := now()
		var out []web.Advisory
		for i := range incs {
			inc := &incs[i]
			if !publishable(inc, t) {
				continue
			}
			out = append(out, d.toAdvisory(inc, tmpl))
		}
		return out, nil
	}
}

// toAdvisory maps a disclosed incident to its public advisory.
func (d *daemon) toAdvisory(inc *workflow.Incident, tmpl *templates.Set) web.Advisory {
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
	adv.Details = d.advisoryText(inc, tmpl)
	return adv
}

// advisoryText is the advisory as it was mailed: the "advisory" template
// (the operator's override included) over the same fields as listd gives it.
// Should the template want a field this map lacks, the text is composed
// plainly instead.
func (d *daemon) advisoryText(inc *workflow.Incident, tmpl *templates.Set) string {
	a := inc.Advisory
	data := map[string]any{
		"Project": d.cfg.Domain, "ID": string(inc.ID), "CVE": strings.Join(inc.CVEs, ", "),
		"Summary": plain(a.Summary), "Actor": plain(a.Actor), "Impact": plain(a.Impact), "Condition": plain(a.Condition),
		"Severity": inc.Severity().String(), "Score": "", "Vector": "", "CalculatorURL": "",
		"Affected": plain(a.Affected), "Fixed": plain(a.Fixed), "Mitigation": plain(a.Mitigation),
		"ActionRequired": plain(a.ActionRequired), "FixImpact": plain(a.FixImpact), "Detection": plain(a.Detection),
		"UpgradeDocs": plain(a.UpgradeDocs), "IssueURL": plain(a.IssueURL), "Credit": plain(a.Credit),
		"T": "", "PreviousNotice": "", "At": "", "Person": "The Fix Lead",
		"SecurityAddress": d.cfg.Lists["security"].Address, "AdvisoryText": "",
		"Renotify": false, "Subscribers": 0, "Channels": 0, "Distributors": 0,
	}
	if data["CVE"] == "" {
		data["CVE"] = string(inc.ID)
	}
	if data["Credit"] == "" {
		data["Credit"] = "an external reporter"
	}
	if c, ok := inc.CVSS(); ok {
		data["Score"], data["Vector"] = c.ScoreText(), c.Vector
	}
	if !inc.T.IsZero() {
		data["T"] = workflow.FormatInstant(inc.T)
	}
	for _, m := range d.cfg.Members {
		if m.Email == inc.FixLead && m.Name != "" {
			data["Person"] = m.Name
		}
	}
	if tmpl != nil {
		if text, err := tmpl.Render("advisory", data); err == nil {
			return text
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s may be able to %s", a.Actor, a.Impact)
	if a.Condition != "" {
		fmt.Fprintf(&b, ", only if %s", a.Condition)
	}
	b.WriteString(".\n")
	for _, f := range []struct{ label, v string }{
		{"Affected versions", a.Affected}, {"Fixed versions", a.Fixed}, {"ACTION REQUIRED", a.ActionRequired},
		{"Before upgrading", a.Mitigation}, {"Impact of the fix", a.FixImpact}, {"Detection", a.Detection},
		{"Upgrade", a.UpgradeDocs},
	} {
		if f.v != "" {
			fmt.Fprintf(&b, "\n%s:\n%s\n", f.label, plain(f.v))
		}
	}
	return plain(b.String())
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
