package governance

import (
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/embargo-project/embargo/workflow"
)

// Application is a vendor's application to the distributors list
// (docs/process.md §5, §7.9): its security alias and product, and the
// evidence for each criterion. Every field is the applicant's text,
// sanitised (clean); the templates quote it.
type Application struct {
	Alias       string `json:"alias"`             // (0) the monitored security alias: the address that joins
	Product     string `json:"product"`           // the distribution or product
	Voucher     string `json:"voucher,omitempty"` // (8) the member who vouches, if named
	Maintained  string `json:"maintained"`        // (1) actively maintained
	Users       string `json:"users"`             // (2) users beyond the organisation
	Record      string `json:"record"`            // (3) a public record of fixing security issues
	NotARebuild string `json:"not_a_rebuild"`     // (4) not a rebuild of another distribution
	Community   string `json:"community"`         // (5) takes part in the community
	Embargo     string `json:"embargo"`           // (6) accepts the embargo
	Contributes string `json:"contributes"`       // (7) contributes back
	Signed      bool   `json:"signed"`            // the message was signed by the attached key
}

// formField is one field of the application form.
type formField struct {
	name  string // as written, case-insensitive
	key   string // the template field
	ask   string // what to write, for the form
	line  bool   // one line
	addr  bool   // an address
	optn  bool   // optional
	field func(*Application) *string
}

var form = []formField{
	{"Alias", "alias", "your monitored security alias (it joins the list)", true, true, false, func(a *Application) *string { return &a.Alias }},
	{"Product", "product", "the distribution or product", true, false, false, func(a *Application) *string { return &a.Product }},
	{"Vouched-By", "voucher", "the list member who vouches for you (their address)", true, true, true, func(a *Application) *string { return &a.Voucher }},
	{"Maintained", "maintained", "evidence that it is actively maintained", false, false, false, func(a *Application) *string { return &a.Maintained }},
	{"Users", "users", "evidence of users beyond your organisation", false, false, false, func(a *Application) *string { return &a.Users }},
	{"Record", "record", "your public, current record of fixing security issues (links)", false, false, false, func(a *Application) *string { return &a.Record }},
	{"Not-A-Rebuild", "not_a_rebuild", "why it is not a rebuild of another distribution", false, false, false, func(a *Application) *string { return &a.NotARebuild }},
	{"Community", "community", "how you take part in the community", false, false, false, func(a *Application) *string { return &a.Community }},
	{"Embargo", "embargo", "that you accept the embargo and its terms", false, false, false, func(a *Application) *string { return &a.Embargo }},
	{"Contributes", "contributes", "how you contribute back (reviews, tests, reports)", false, false, false, func(a *Application) *string { return &a.Contributes }},
}

// Limits on an application's text.
const (
	MaxFieldBytes       = 4000
	MaxApplicationBytes = 32 * 1024
)

// ApplicationForm is the form an applicant fills in: one "Field: value"
// line per field; evidence may continue on the following lines.
func ApplicationForm() string {
	var b strings.Builder
	for _, f := range form {
		opt := ""
		if f.optn {
			opt = " (optional)"
		}
		fmt.Fprintf(&b, "%s: <%s>%s\n", f.name, f.ask, opt)
	}
	return b.String()
}

var fieldLine = regexp.MustCompile(`^([A-Za-z][A-Za-z-]*)[ \t]*:[ \t]*(.*)$`)

func lookupForm(name string) (formField, bool) {
	for _, f := range form {
		if strings.EqualFold(f.name, name) {
			return f, true
		}
	}
	return formField{}, false
}

// ParseApplication reads the form from a message's text: a line "Field:
// value" with a field of the form starts it, the lines after continue it up
// to the next field, a quoted (">") line or the signature ("-- "); text
// before the first field is ignored. Every problem is reported at once.
func ParseApplication(text string) (Application, []string) {
	var a Application
	var problems []string
	if len(text) > MaxApplicationBytes {
		return a, []string{fmt.Sprintf("the application is longer than %d bytes", MaxApplicationBytes)}
	}
	vals := map[string][]string{}
	cur := ""
	for _, l := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n") {
		if l == "-- " || l == "--" {
			break
		}
		if strings.HasPrefix(l, ">") {
			cur = ""
			continue
		}
		if m := fieldLine.FindStringSubmatch(l); m != nil {
			if f, ok := lookupForm(m[1]); ok {
				if _, dup := vals[f.key]; dup {
					problems = append(problems, f.name+" is given twice")
				}
				cur, vals[f.key] = f.key, []string{m[2]}
				continue
			}
		}
		if cur != "" {
			vals[cur] = append(vals[cur], l)
		}
	}
	for _, f := range form {
		v := clean(strings.Join(vals[f.key], "\n"))
		switch {
		case v == "" && !f.optn:
			problems = append(problems, fmt.Sprintf("%s is missing: %s", f.name, f.ask))
			continue
		case v == "":
			continue
		case len(v) > MaxFieldBytes:
			problems = append(problems, fmt.Sprintf("%s is longer than %d bytes", f.name, MaxFieldBytes))
			continue
		case f.line && strings.Contains(v, "\n"):
			problems = append(problems, f.name+" takes one line")
			continue
		case f.addr:
			addr, ok := address(v)
			if !ok {
				problems = append(problems, fmt.Sprintf("%s: %q is not an address (local@domain)", f.name, v))
				continue
			}
			v = addr
		}
		*f.field(&a) = v
	}
	return a, problems
}

var addrPattern = regexp.MustCompile(`^[A-Za-z0-9.!#$%&'*+/=?^_{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$`)

func address(s string) (string, bool) {
	s = strings.Trim(strings.TrimSpace(s), "<>")
	return strings.ToLower(s), len(s) <= 254 && addrPattern.MatchString(s)
}

// clean makes applicant text inert (docs/threat-model.md F4): valid UTF-8,
// no control characters but newline and tab, no bidirectional or invisible
// formatting characters, no trailing white space, no blank lines at either
// end. The templates quote it, so no line can start a command.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t':
			return r
		case unicode.IsControl(r), unicode.Is(unicode.Cf, r), r == '\u2028', r == '\u2029':
			return -1
		}
		return r
	}, s)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t")
	}
	s = strings.Trim(strings.Join(lines, "\n"), "\n")
	if !utf8.ValidString(s) {
		return ""
	}
	return strings.TrimSpace(s)
}

// Submission is one message to distributors+apply@.
type Submission struct {
	From      string       // the sender (From): the acknowledgement goes there
	Text      string       // the text/plain part
	Keys      []KeyVerdict // the public keys attached (application/pgp-keys), checked by the caller
	Signed    bool         // the message carries a valid signature by the attached key
	MessageID string
	RootMsg   string // a fresh random Message-ID anchoring the application's thread
}

// Submit takes a distributor application. It opens a proposal
// (KindApplication) and returns two mails: the application to the SRC in the
// proposal's thread (encrypted to each member) and the acknowledgement to
// the sender (encrypted to the attached key). An application that cannot be
// taken — the form incomplete, not exactly one key attached, a key with
// problems (expired, revoked, weak, no encryption subkey), the alias not a
// user ID of the key, an application for the alias already open, or too many
// open — is refused: the State is unchanged, the error wraps ErrRefused,
// and Result.Actions holds the refusal to the sender with every reason and
// the form. The caller performs Result.Actions in both cases, rate-limited
// per sender like intake acknowledgements (the sender is not authenticated).
//
// An alias that is already a member is not refused here (that would tell
// anyone who is on the list, docs/threat-model.md F3): the SRC copy says so,
// and the proposal can only end denied.
func Submit(st State, sub Submission, now time.Time, cfg Config) (Result, error) {
	now = now.UTC()
	g := &gov{st: st.clone(), cfg: cfg.withDefaults(), now: now, rootMsg: sub.RootMsg}
	a, reasons := ParseApplication(sub.Text)
	a.Signed = sub.Signed
	var k KeyVerdict
	switch len(sub.Keys) {
	case 0:
		reasons = append(reasons, "no public key is attached: attach yours (application/pgp-keys); every notice is encrypted to it")
	case 1:
		k = sub.Keys[0]
		problems, _ := k.check("", now)
		for _, p := range problems {
			reasons = append(reasons, "the key "+k.Fingerprint+": "+p)
		}
		if a.Alias != "" && !k.HasAddress(a.Alias) {
			reasons = append(reasons, "the key "+k.Fingerprint+" has no user ID with "+a.Alias+": add one (gpg --quick-add-uid)")
		}
	default:
		reasons = append(reasons, fmt.Sprintf("%d keys are attached: attach exactly one", len(sub.Keys)))
	}
	if a.Alias != "" {
		if p := g.st.openFor(KindApplication, a.Alias); p != nil && !g.settle(p) {
			reasons = append(reasons, "an application for "+a.Alias+" is already under review")
		}
	}
	if len(g.st.Open()) >= MaxOpenApplications {
		reasons = append(reasons, "too many applications are under review; apply again in a few days")
	}
	if len(reasons) > 0 {
		key := ""
		if len(sub.Keys) == 1 {
			if problems, _ := k.check("", now); len(problems) == 0 {
				key = k.Armored
			}
		}
		refusal := Mail{Template: "distributor-application-refused", Subject: "Your application to the distributors list", To: strings.ToLower(sub.From), Key: key,
			Fields: map[string]string{"reasons": "- " + strings.Join(reasons, "\n- "), "form": ApplicationForm()}}
		return Result{State: st, Actions: []Action{refusal}}, argErr(ErrRefused, "application refused: %s", strings.Join(reasons, "; "))
	}
	g.by = workflow.Signer{Email: strings.ToLower(sub.From)}
	p := g.open(Proposal{Kind: KindApplication, Email: a.Alias, Roles: []string{workflow.RoleDistributor}, Key: &k, Application: &a})
	_, warnings := k.check(a.Alias, now)
	g.emit(Mail{Template: "distributor-application", Subject: "Distributor application", Thread: p.ID, ToSRC: true, Fields: g.applicationFields(p, warnings)})
	g.emit(Mail{Template: "distributor-application-ack", Subject: "Your application to the distributors list", Thread: p.ID, To: p.OpenedBy, Key: k.Armored,
		Fields: map[string]string{"id": p.ID, "alias": a.Alias, "product": a.Product, "fingerprint": k.Fingerprint,
			"deadline": workflow.FormatInstant(p.Deadline), "lazy_days": fmt.Sprint(int(g.cfg.LazyConsensus / (24 * time.Hour)))}})
	g.st.Version = SchemaVersion
	return Result{State: g.st, Actions: g.actions, Applied: true}, nil
}

// applicationFields is the data of the SRC's copy of an application.
func (g *gov) applicationFields(p *Proposal, warnings []string) map[string]string {
	a, k := p.Application, p.Key
	expires := "never"
	if !k.Expires.IsZero() {
		expires = workflow.FormatInstant(k.Expires)
	}
	signed := "no: the message was not signed by the attached key"
	if a.Signed {
		signed = "yes, by the attached key"
	}
	roster := g.effective()
	if cur, ok := lookup(roster, a.Alias); ok {
		warnings = append(warnings, fmt.Sprintf("%s is ALREADY ON THE ROSTER (roles %s, key %s): this application can only be denied; a new key goes through /member key", a.Alias, strings.Join(cur.Roles, ", "), orNone(cur.Fingerprint)))
	}
	if other := pinnedFor(roster, k.Fingerprint, a.Alias); other != "" {
		warnings = append(warnings, "the key is ALREADY PINNED for another member: this application can only be denied")
	}
	voucher, status := "none named", "criterion 8 (an existing member vouches) is not met"
	if a.Voucher != "" {
		voucher, status = a.Voucher, "NOT a member of the distributors list"
		if e, ok := lookup(roster, a.Voucher); ok && e.Has(workflow.RoleDistributor) {
			status = "a member of the distributors list: ask them to confirm"
		}
	}
	f := map[string]string{
		"id": p.ID, "applicant": p.OpenedBy, "alias": a.Alias, "product": a.Product,
		"fingerprint": k.Fingerprint, "algorithm": orNone(k.Algorithm), "expires": expires, "userids": strings.Join(k.UserIDs, "\n"),
		"warnings": strings.Join(warnings, "\n"), "signed": signed, "voucher": voucher, "voucher_status": status,
		"deadline": workflow.FormatInstant(p.Deadline), "quorum": fmt.Sprint(g.cfg.Quorum), "lazy_days": fmt.Sprint(int(g.cfg.LazyConsensus / (24 * time.Hour))),
	}
	for _, ff := range form[3:] {
		f[ff.key] = *ff.field(a)
	}
	return f
}
