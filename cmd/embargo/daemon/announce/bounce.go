package announce

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"strings"
	"time"

	gomessage "github.com/emersion/go-message"
	bolt "go.etcd.io/bbolt"
)

// Limits of DSN parsing: a report is small; anything larger is not one we
// read (docs/threat-model.md C1, C2).
const (
	maxDSNHeader     = 64 << 10
	maxDSNPart       = 64 << 10
	maxDSNParts      = 50
	maxDSNDepth      = 4
	maxDSNRecipients = 1000
)

// DSNRecipient is one per-recipient block of a delivery status
// notification (RFC 3464 §2.3).
type DSNRecipient struct {
	FinalRecipient    string // the address, without the "rfc822;" type
	OriginalRecipient string // the same for Original-Recipient, if present
	Action            string // failed, delayed, delivered, relayed, expanded (lower case)
	Status            string // e.g. "5.1.1"
	// Diagnostic is the Diagnostic-Code field as the reporting MTA wrote
	// it (RFC 3464 §2.3.6), unfolded: text an outsider chose, for the
	// caller to escape before showing it anyone.
	Diagnostic string
}

// Permanent reports whether the block says the message could not be
// delivered, for good: Action failed (RFC 3464 §2.3.3). A "failed" with a
// 4.x.x status (given up after retrying) counts too: the copy never arrived.
func (r DSNRecipient) Permanent() bool { return r.Action == "failed" }

// ParseDSN reads the message/delivery-status part (RFC 3464; also RFC 6533's
// message/global-delivery-status) of raw, a multipart/report (RFC 6522),
// and returns its per-recipient blocks. A message that is not a DSN gives
// none and no error: bounces in other formats are archived, not counted.
func ParseDSN(raw []byte) []DSNRecipient {
	ent, err := gomessage.ReadWithOptions(bytes.NewReader(raw), &gomessage.ReadOptions{MaxHeaderBytes: maxDSNHeader})
	if ent == nil || (err != nil && !gomessage.IsUnknownCharset(err) && !gomessage.IsUnknownEncoding(err)) {
		return nil
	}
	var out []DSNRecipient
	parts := 0
	var walk func(e *gomessage.Entity, depth int)
	walk = func(e *gomessage.Entity, depth int) {
		if depth > maxDSNDepth || parts >= maxDSNParts || out != nil {
			return
		}
		parts++
		mt, _, _ := mime.ParseMediaType(e.Header.Get("Content-Type"))
		switch mt {
		case "message/delivery-status", "message/global-delivery-status":
			b, _ := io.ReadAll(io.LimitReader(e.Body, maxDSNPart))
			out = parseDeliveryStatus(b)
			return
		}
		mr := e.MultipartReader()
		if mr == nil {
			return
		}
		for parts < maxDSNParts {
			p, err := mr.NextPart()
			if err != nil {
				return
			}
			walk(p, depth+1)
			if out != nil {
				return
			}
		}
	}
	walk(ent, 0)
	return out
}

// parseDeliveryStatus reads the groups of fields of a delivery-status body:
// the per-message group, then one group per recipient, separated by blank
// lines (RFC 3464 §2.1).
func parseDeliveryStatus(b []byte) []DSNRecipient {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	var groups []map[string]string
	cur := map[string]string{}
	var last string
	flush := func() {
		if len(cur) > 0 {
			groups = append(groups, cur)
		}
		cur, last = map[string]string{}, ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), maxDSNPart)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				cur[last] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			if _, dup := cur[last]; !dup {
				cur[last] = strings.TrimSpace(v)
			}
		}
		if len(groups) > maxDSNRecipients {
			break
		}
	}
	flush()
	if len(groups) < 2 {
		return nil
	}
	out := []DSNRecipient{}
	for _, g := range groups[1:] {
		r := DSNRecipient{
			FinalRecipient:    dsnAddress(g["final-recipient"]),
			OriginalRecipient: dsnAddress(g["original-recipient"]),
			Action:            strings.ToLower(firstWord(g["action"])),
			Status:            firstWord(g["status"]),
			Diagnostic:        g["diagnostic-code"],
		}
		if r.FinalRecipient == "" && r.OriginalRecipient == "" {
			continue
		}
		out = append(out, r)
	}
	return out
}

// dsnAddress reads "rfc822; addr" (RFC 3464 §2.3.2); other address types
// give "".
func dsnAddress(v string) string {
	typ, addr, ok := strings.Cut(v, ";")
	if !ok || !strings.EqualFold(strings.TrimSpace(typ), "rfc822") {
		return ""
	}
	a, _, ok := normAddress(addr)
	if !ok {
		return ""
	}
	return a
}

func firstWord(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, " \t("); i >= 0 {
		s = s[:i]
	}
	return s
}

// HandleBounce reads a DSN that arrived at announce+bounces-<release id>@
// (detail is the part after the "+") and counts, for each subscriber the
// report says failed permanently, one bounce for that release; an address
// reaching Options.MaxBounces is disabled. It returns the number of
// bounces counted (one already counted for this release is not). Anything else — not a DSN, an unknown or old
// release, a recipient the release did not cover, a delay notice — counts
// nothing and is no error; the caller archives the mail either way and
// never forwards it (docs/threat-model.md G7).
//
// A forged DSN can count against a subscriber at most once per release,
// and only for a release that covered it and started within
// Options.BounceWindow.
func HandleBounce(tx *bolt.Tx, detail string, raw []byte, now time.Time, o Options) (int, error) {
	o = o.withDefaults()
	b, err := open(tx)
	if err != nil {
		return 0, err
	}
	detail = strings.ToLower(detail)
	id, ok := strings.CutPrefix(detail, DetailBouncesPrefix)
	if !ok || !validJobID(id) {
		return 0, nil
	}
	job, err := b.getJob(jobKey(id))
	if err != nil {
		return 0, nil // unknown release
	}
	if (job.State != JobReleasing && job.State != JobReleased && job.State != JobHeld) || job.Started.IsZero() ||
		now.Sub(job.Started) > o.BounceWindow {
		return 0, nil
	}
	n := 0
	for _, r := range ParseDSN(raw) {
		if !r.Permanent() {
			continue
		}
		for _, a := range []string{r.OriginalRecipient, r.FinalRecipient} {
			if a == "" {
				continue
			}
			key := strings.ToLower(a)
			s, err := b.getSub(key)
			if err != nil {
				return n, err
			}
			if s == nil || s.State != StateActive || s.Seq == 0 || s.Seq > job.UpTo {
				continue // not a recipient of this release
			}
			counted, err := b.bounce(key, string(jobKey(id)), o)
			if err != nil {
				return n, err
			}
			if counted {
				n++
			}
			break
		}
	}
	if n > 0 {
		o.Logger.Info("announce bounces counted", "release", job.ID, "subscribers", n)
	}
	return n, nil
}
