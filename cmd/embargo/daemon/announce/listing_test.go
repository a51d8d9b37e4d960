package announce

import (
	"fmt"
	"strings"
	"testing"
)

// entries renders what a listing holds, "line addr|name" each.
func entries(l *Listing) string {
	var b strings.Builder
	for _, e := range l.Entries {
		fmt.Fprintf(&b, "%d %s|%s\n", e.Line, e.Address, e.Name)
	}
	return b.String()
}

// invalidLines are the lines a listing reported, with their reasons.
func invalidLines(l *Listing) map[int]string {
	out := map[int]string{}
	for _, s := range l.Invalid {
		out[s.Line] = s.Reason
	}
	return out
}

func mustParse(t *testing.T, data string) *Listing {
	t.Helper()
	l, err := ParseListing([]byte(data))
	if err != nil {
		t.Fatalf("ParseListing = %v", err)
	}
	return l
}

// TestParseMailman reads what Mailman 3's `mailman members` prints: Python's
// formataddr per member (quoted when the name has specials, RFC 2047 when it
// is not ASCII, in base64 as Python's utf-8 charset writes it), bare
// addresses (--email-only), the line of an empty list; comments and blank
// lines as addmembers skips them; bad lines reported by number.
func TestParseMailman(t *testing.T) {
	in := "# exported 2026-11-23\r\n" +
		"Anne Person <anne@example.com>\r\n" +
		"\r\n" +
		"bart@example.com\r\n" +
		"\"Person, Cris\" <cris@example.com>\r\n" +
		"=?utf-8?b?SsO8cmdlbiBNw7xsbGVy?= <juergen@example.de>\r\n" +
		"=?utf-8?q?Zo=C3=AB?= <zoe@example.fr>\r\n" +
		"dave@example.org (Dave Old-Style)\r\n" +
		"\"Back\\\\slash \\\"Quote\\\"\" <eve@example.net>\r\n" +
		"not an address\r\n" +
		"x@localhost\r\n" +
		"two@example.org, three@example.org\r\n" +
		"ANNE@Example.com\r\n" +
		"Bidi \u202eevil\u202c Name <fay@example.net>\r\n" +
		"\xe9t\xe9@example.org\r\n" +
		"ant.example.com has no members\r\n"
	l := mustParse(t, in)
	if l.Format != FormatMailman || l.Lines != 16 {
		t.Errorf("format %q, %d lines; want Mailman, 16", l.Format, l.Lines)
	}
	want := "2 anne@example.com|Anne Person\n4 bart@example.com|\n5 cris@example.com|Person, Cris\n" +
		"6 juergen@example.de|Jürgen Müller\n7 zoe@example.fr|Zoë\n8 dave@example.org|Dave Old-Style\n" +
		"9 eve@example.net|Back\\slash \"Quote\"\n14 fay@example.net|Bidi \u202eevil\u202c Name\n"
	if got := entries(l); got != want {
		t.Errorf("entries:\n%s\nwant:\n%s", got, want)
	}
	bad := invalidLines(l)
	for line, why := range map[int]string{10: "not a plain address", 11: "not a plain address", 12: "one address per line", 13: "already on line 2", 15: "not UTF-8"} {
		if !strings.Contains(bad[line], why) {
			t.Errorf("line %d: reason %q, want %q", line, bad[line], why)
		}
	}
	if len(bad) != 5 {
		t.Errorf("%d lines reported, want 5: %v", len(bad), bad)
	}
	// Names are cleaned where they are stored (CleanName): the override is gone.
	if got := CleanName(l.Entries[7].Name); got != "Bidi evil Name" {
		t.Errorf("CleanName = %q", got)
	}
	if l := mustParse(t, "ant.example.com has no members\n"); len(l.Entries) != 0 || len(l.Invalid) != 0 {
		t.Errorf("empty list: %+v", l)
	}
}

// googleClassic is the export of groups.google.com ("Export members"): a
// title line padded with commas, then the header row.
const googleClassic = "\ufeffMembers for group Example Security Announce,,,,,,,,,,,,\r\n" +
	"Email address,Nickname,Group status,Email status,Email preference,Posting permissions,Join year,Join month,Join day,Join hour,Join minute,Join second,Time zone\r\n" +
	"owner@example.org,Olga Owner,owner,,All email,allowed,2019,3,4,10,11,12,Europe/Berlin\r\n" +
	"reader@example.net,\"Reader, Rita\",member,,Digest,allowed,2020,1,2,3,4,5,America/New_York\r\n" +
	"invited@example.com,,invited,,,,,,,,,,\r\n" +
	"pending@example.com,,pending,,,,,,,,,,\r\n" +
	"web-only@example.com,,member,,No email,allowed,2021,1,1,1,1,1,UTC\r\n" +
	"manager@example.org,,manager,,Abridged,allowed,2022,1,1,1,1,1,UTC\r\n" +
	"broken address,,member,,All email,,,,,,,,\r\n" +
	"READER@example.net,,member,,All email,,,,,,,,\r\n"

func TestParseGoogleClassic(t *testing.T) {
	l := mustParse(t, googleClassic)
	if l.Format != FormatGoogle {
		t.Errorf("format %q", l.Format)
	}
	want := "3 owner@example.org|Olga Owner\n4 reader@example.net|Reader, Rita\n8 manager@example.org|\n"
	if got := entries(l); got != want {
		t.Errorf("entries:\n%s\nwant:\n%s", got, want)
	}
	bad := invalidLines(l)
	for line, why := range map[int]string{5: `status "invited"`, 6: `status "pending"`, 7: `chose "No email"`, 9: "not a plain address", 10: "already on line 4"} {
		if !strings.Contains(bad[line], why) {
			t.Errorf("line %d: reason %q, want %q", line, bad[line], why)
		}
	}
	// The header alone, as some exports start, also reads.
	l = mustParse(t, "Email address,Nickname,Group status,Email status\nann@ex.org,,member,\nbob@ex.org,Bob,member,\n")
	if got := entries(l); got != "2 ann@ex.org|\n3 bob@ex.org|Bob\n" {
		t.Errorf("short export: %s", got)
	}
}

// TestParseGoogleMemberColumns: an export that names the group in each row
// ("Group name,Group email,…") takes the member's address, never the group's.
func TestParseGoogleMemberColumns(t *testing.T) {
	in := "Group name,Group email,Member name,Member email,Member role,Member type\n" +
		"Security Announce,security-announce@googlegroups.com,Ann Example,ann@example.org,MEMBER,USER\n" +
		"Security Announce,security-announce@googlegroups.com,,owner@example.org,OWNER,USER\n" +
		"Security Announce,security-announce@googlegroups.com,,,MEMBER,CUSTOMER\n" +
		"Security Announce,security-announce@googlegroups.com,Nested,team@example.org,MEMBER,GROUP\n"
	l := mustParse(t, in)
	if l.Format != FormatGoogle {
		t.Fatalf("format %q", l.Format)
	}
	if got, want := entries(l), "2 ann@example.org|Ann Example\n3 owner@example.org|\n5 team@example.org|Nested\n"; got != want {
		t.Errorf("entries:\n%s\nwant:\n%s", got, want)
	}
	if why := invalidLines(l)[4]; !strings.Contains(why, "CUSTOMER") {
		t.Errorf("line 4: %q", why)
	}
	// A list of groups is not a list of members.
	if _, err := ParseListing([]byte("Group name,Group email,Members\nSec,sec@googlegroups.com,12\n")); err == nil || !strings.Contains(err.Error(), "list of groups") {
		t.Errorf("groups listing: %v", err)
	}
	if _, err := ParseListing([]byte("Members for group X\nName,Phone\nA,1\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("no address column: %v", err)
	}
}

// TestExportRoundTrip: what FormatAddress writes, ParseListing reads back
// to the same addresses and names (export → import).
func TestExportRoundTrip(t *testing.T) {
	subs := [][2]string{{"", "plain@example.org"}, {"Anne Person", "anne@example.com"}, {"Person, Cris", "cris@example.com"},
		{"Jürgen Müller", "juergen@example.de"}, {`Back\slash "Quote"`, "eve@example.net"}, {"Dr. Who (the)", "who@example.org"},
		{"<script>", "s@example.org"}, {"a@b", "at@example.org"}, {"=?utf-8?b?QQ==?=", "encoded@example.org"}}
	var b strings.Builder
	for _, s := range subs {
		b.WriteString(FormatAddress(s[0], s[1]) + "\n")
	}
	l := mustParse(t, b.String())
	if len(l.Invalid) != 0 || len(l.Entries) != len(subs) || l.Format != FormatMailman {
		t.Fatalf("round trip of\n%s: %s %v", b.String(), entries(l), l.Invalid)
	}
	for i, e := range l.Entries {
		if e.Name != subs[i][0] || e.Address != subs[i][1] {
			t.Errorf("line %d: %q <%s> came back as %q <%s> from %q", i+1, subs[i][0], subs[i][1], e.Name, e.Address, FormatAddress(subs[i][0], subs[i][1]))
		}
	}
}

func TestParseListingLimits(t *testing.T) {
	if _, err := ParseListing(make([]byte, MaxListingBytes+1)); err == nil {
		t.Error("an oversized listing parsed")
	}
	if l := mustParse(t, ""); len(l.Entries) != 0 || l.Format != FormatMailman {
		t.Errorf("empty file: %+v", l)
	}
}

func FuzzParseListing(f *testing.F) {
	f.Add([]byte(googleClassic))
	f.Add([]byte("Anne <anne@example.com>\n=?utf-8?b?SsO8cmdlbg==?= <j@example.de>\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParseListing(data)
		if err != nil {
			return
		}
		for _, e := range l.Entries {
			if _, _, ok := normAddress(e.Address); !ok {
				t.Fatalf("entry %q is not a plain address", e.Address)
			}
			if got := EntryOf(FormatAddress(e.Name, e.Address)); got.Address != e.Address || got.Name != CleanName(e.Name) {
				t.Fatalf("FormatAddress(%q, %q) reads back as %+v", e.Name, e.Address, got)
			}
		}
	})
}
