package announce

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"mime"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// The members listings ParseListing reads; it tells them apart by their
// content.
const (
	// FormatMailman is what Mailman 3's `mailman members LIST` prints (and
	// `mailman addmembers` reads): one member per line, as Python's
	// email.utils.formataddr writes it: "addr", or "Display Name <addr>"
	// with the name quoted when it holds specials and RFC 2047-encoded when
	// it is not ASCII. `--email-only` prints bare addresses. Blank lines and
	// lines starting with '#' are ignored, as addmembers does; a list
	// without members prints "LIST-ID has no members".
	FormatMailman = "Mailman members listing"
	// FormatGoogle is a Google Groups member export (CSV): an optional
	// first line "Members for group NAME", then a header row naming the
	// columns ("Email address,Nickname,Group status,Email status,Email
	// preference,Posting permissions,Join year,…"; other exports name the
	// member's address "Member email" next to the group's own "Group
	// email"). Columns are found by their names, in any order.
	FormatGoogle = "Google Groups member export (CSV)"
)

// MaxListingBytes bounds a members listing: 64 MiB is some million addresses.
const MaxListingBytes = 64 << 20

// Listing is what ParseListing read: the entries to import, in file order
// without duplicates, and the lines it could not take, each with its reason.
type Listing struct {
	Format  string
	Lines   int // lines in the file
	Entries []Entry
	Invalid []Skip
}

// ParseListing reads a Mailman 3 members listing or a Google Groups member
// export, whichever data is. An address that is not a plain local@domain
// (docs/threat-model.md B3, B4), a duplicate, or a Google Groups member who has not
// joined (invited, pending) or takes no mail is reported with its line and
// left out; the rest of the file still counts. Only a file that cannot be
// read as either format is an error.
func ParseListing(data []byte) (*Listing, error) {
	if len(data) > MaxListingBytes {
		return nil, fmt.Errorf("the file has %d bytes; a members listing may have at most %d", len(data), MaxListingBytes)
	}
	data = bytes.TrimPrefix(data, []byte("\ufeff")) // a BOM, as spreadsheets write
	l := &Listing{Lines: bytes.Count(data, []byte("\n"))}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		l.Lines++
	}
	var err error
	if isGoogleCSV(data) {
		l.Format = FormatGoogle
		err = l.readGoogle(data)
	} else {
		l.Format = FormatMailman
		l.readMailman(data)
	}
	if err != nil {
		return nil, err
	}
	l.dedupe()
	return l, nil
}

// emailColumns name the member's address in a Google Groups export, best
// first; "group email" is the group's own address, never a member's.
var (
	emailColumns  = []string{"member email", "member email address", "email address", "email", "e-mail address", "e-mail"}
	nameColumns   = []string{"member name", "nickname", "display name", "full name", "name"}
	statusColumns = []string{"group status", "member status", "membership status", "status"}
	prefColumns   = []string{"email preference", "subscription", "delivery settings", "email delivery"}
	typeColumns   = []string{"member type", "type"}
)

// isGoogleCSV: the first line that is not blank starts with "Members for
// group", or is a CSV header naming an address column.
func isGoogleCSV(data []byte) bool {
	for line := range strings.Lines(string(data[:min(len(data), 64<<10)])) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "Members for group") {
			return true
		}
		rec, err := csv.NewReader(strings.NewReader(line)).Read()
		return err == nil && len(rec) > 1 && (column(rec, emailColumns) >= 0 || column(rec, []string{"group email"}) >= 0)
	}
	return false
}

// column returns the index of the first of names found in header, or -1.
func column(header []string, names []string) int {
	for _, n := range names {
		if i := slices.IndexFunc(header, func(h string) bool { return strings.EqualFold(strings.TrimSpace(h), n) }); i >= 0 {
			return i
		}
	}
	return -1
}

// googleCols are the columns of one export.
type googleCols struct{ email, name, status, pref, typ int }

func (l *Listing) readGoogle(data []byte) error {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	r.LazyQuotes = true // a stray quote in a nickname must not cost the file
	r.ReuseRecord = true
	var cols *googleCols
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			return fmt.Errorf("line %d is not valid CSV (%v): save the export again as CSV, or fix that line", line, err)
		}
		if cols == nil {
			if strings.HasPrefix(strings.TrimSpace(rec[0]), "Members for group") {
				continue // the export's title line, padded with commas or not
			}
			if cols, err = googleHeader(rec, line); err != nil {
				return err
			}
			continue
		}
		l.googleRow(rec, line, cols)
	}
	if cols == nil {
		return errors.New("the file has no header row naming the member's address (\"Email address\" or \"Member email\")")
	}
	return nil
}

func googleHeader(rec []string, line int) (*googleCols, error) {
	c := &googleCols{email: column(rec, emailColumns), name: column(rec, nameColumns), status: column(rec, statusColumns),
		pref: column(rec, prefColumns), typ: column(rec, typeColumns)}
	if c.email < 0 {
		if column(rec, []string{"group email"}) >= 0 {
			return nil, fmt.Errorf("line %d names the group's address but no member's (\"Email address\" or \"Member email\"): this looks like a list of groups; export the members of one group instead", line)
		}
		return nil, fmt.Errorf("line %d should be the header row naming the member's address (\"Email address\" or \"Member email\")", line)
	}
	return c, nil
}

// notJoined are Google Groups statuses of people who are not members.
var notJoined = []string{"invited", "pending", "requested", "join requested", "banned", "suspended"}

func (l *Listing) googleRow(rec []string, line int, c *googleCols) {
	get := func(i int) string {
		if i < 0 || i >= len(rec) {
			return ""
		}
		return strings.TrimSpace(rec[i])
	}
	addr, name := get(c.email), get(c.name)
	if addr == "" && strings.Join(rec, "") == "" {
		return // a blank line
	}
	e := Entry{Line: line, Address: addr, Name: name}
	status, pref, typ := strings.ToLower(get(c.status)), strings.ToLower(get(c.pref)), strings.ToUpper(get(c.typ))
	switch {
	case addr == "" && typ == "CUSTOMER":
		l.skip(e, "the whole organisation is a member (type CUSTOMER): there is no address to subscribe")
	case slices.Contains(notJoined, status):
		l.skip(e, fmt.Sprintf("%s has the status %q in the group, not member: not subscribed", addr, get(c.status)))
	case strings.Contains(pref, "no email"):
		l.skip(e, fmt.Sprintf("%s chose %q in the group: not subscribed", addr, get(c.pref)))
	default:
		l.add(e)
	}
}

// noMembers is the line `mailman members` prints for an empty list.
var noMembers = regexp.MustCompile(`^\S+ has no members$`)

func (l *Listing) readMailman(data []byte) {
	n := 0
	for raw := range strings.Lines(string(data)) {
		n++
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == '#' || noMembers.MatchString(line) {
			continue
		}
		e := Entry{Line: n, Address: line}
		if !utf8.ValidString(line) {
			l.skip(e, "the line is not UTF-8: save the listing as UTF-8")
			continue
		}
		e.Address, e.Name = splitMailbox(line)
		l.add(e)
	}
}

// splitMailbox reads one mailbox as formataddr writes it: "addr",
// "Name <addr>", "\"Name, Quoted\" <addr>", "=?utf-8?b?…?= <addr>", or the
// older "addr (Name)". What it returns as the address is checked later.
func splitMailbox(s string) (addr, name string) {
	switch {
	case strings.HasSuffix(s, ">") && strings.Contains(s, "<"):
		i := strings.LastIndexByte(s, '<')
		addr, name = s[i+1:len(s)-1], strings.TrimSpace(s[:i])
	case strings.HasSuffix(s, ")") && strings.Contains(s, "("):
		i := strings.IndexByte(s, '(')
		addr, name = strings.TrimSpace(s[:i]), s[i+1:len(s)-1]
	default:
		return s, ""
	}
	if len(name) >= 2 && name[0] == '"' && name[len(name)-1] == '"' {
		// RFC 2047 §5: an encoded-word never appears in a quoted-string.
		return strings.TrimSpace(addr), unquote(name[1 : len(name)-1])
	}
	if strings.Contains(name, "=?") {
		if d, err := new(mime.WordDecoder).DecodeHeader(name); err == nil {
			name = d
		}
	}
	return strings.TrimSpace(addr), name
}

// EntryOf reads one mailbox given on the command line: "addr" or
// "Display Name <addr>", as a line of a Mailman listing.
func EntryOf(s string) Entry {
	addr, name := splitMailbox(strings.TrimSpace(s))
	return Entry{Address: addr, Name: name}
}

// unquote undoes quoted-pair escapes (RFC 5322 §3.2.1).
func unquote(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func (l *Listing) add(e Entry) {
	if _, _, ok := normAddress(e.Address); !ok {
		l.skip(e, fmt.Sprintf("%q is not a plain address like reader@example.org (ASCII local part and domain, one address per line)", e.Address))
		return
	}
	l.Entries = append(l.Entries, e)
}

func (l *Listing) skip(e Entry, why string) { l.Invalid = append(l.Invalid, Skip{e, why}) }

// dedupe keeps the first entry of each address.
func (l *Listing) dedupe() {
	first := map[string]int{}
	out := l.Entries[:0]
	for _, e := range l.Entries {
		_, key, _ := normAddress(e.Address)
		if at, dup := first[key]; dup {
			l.skip(e, fmt.Sprintf("%s is already on line %d", e.Address, at))
			continue
		}
		first[key] = e.Line
		out = append(out, e)
	}
	l.Entries = out
	slices.SortStableFunc(l.Invalid, func(a, b Skip) int { return a.Line - b.Line })
}

// FormatAddress writes one line of a Mailman members listing, as Python's
// formataddr does except that a non-ASCII name stays UTF-8 (which both
// `mailman addmembers` and ParseListing read): "addr" without a name, else
// "Name <addr>", the name quoted when it holds specials (RFC 5322 §3.2.3).
func FormatAddress(name, addr string) string {
	name = CleanName(name)
	if name == "" {
		return addr
	}
	if strings.ContainsAny(name, `()<>[]:;@\,."`) || strings.Contains(name, "=?") {
		name = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(name) + `"`
	}
	return name + " <" + addr + ">"
}
