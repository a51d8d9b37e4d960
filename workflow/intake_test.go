package workflow

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

func fixture() (map[ID]*Incident, map[string]ID, Lookup) {
	incs := map[ID]*Incident{
		"SEC-2026-0001": {ID: "SEC-2026-0001", Phase: PhaseTriage, Reporter: "rep@out.test", FixTeam: []string{"eng@ex.org"}},
		"SEC-2026-0002": {ID: "SEC-2026-0002", Phase: PhaseTriage, Reporter: "other@out.test"},
	}
	ids := map[string]ID{"copy1@ex.org": "SEC-2026-0001", "copy2@ex.org": "SEC-2026-0002"}
	l := Lookup{
		Incident:  func(id ID) (*Incident, bool) { i, ok := incs[id]; return i, ok },
		MessageID: func(m string) (ID, bool) { id, ok := ids[m]; return id, ok },
		IsSRC:     func(a string) bool { return a == "alice@ex.org" },
	}
	return incs, ids, l
}

func TestThread(t *testing.T) {
	_, _, l := fixture()
	tests := []struct {
		name string
		in   Inbound
		want ID // "" = new report
	}{
		{"sub-address, reporter", Inbound{Sender: "rep@out.test", Detail: "SEC-2026-0001"}, "SEC-2026-0001"},
		{"sub-address, lower case", Inbound{Sender: "rep@out.test", Detail: "sec-2026-0001"}, "SEC-2026-0001"},
		{"sub-address, SRC member", Inbound{Sender: "alice@ex.org", Detail: "SEC-2026-0002"}, "SEC-2026-0002"},
		{"sub-address, fix team", Inbound{Sender: "ENG@ex.org", Detail: "SEC-2026-0001"}, "SEC-2026-0001"},
		{"sub-address, stranger", Inbound{Sender: "mallory@evil.test", Detail: "SEC-2026-0001"}, ""},
		{"sub-address, other incident's reporter", Inbound{Sender: "other@out.test", Detail: "SEC-2026-0001"}, ""},
		{"sub-address, unknown incident", Inbound{Sender: "alice@ex.org", Detail: "SEC-2026-0042"}, ""},
		{"in-reply-to", Inbound{Sender: "alice@ex.org", Refs: []string{"copy1@ex.org"}}, "SEC-2026-0001"},
		{"references, first known wins", Inbound{Sender: "alice@ex.org", Refs: []string{"unknown@x", "copy2@ex.org", "copy1@ex.org"}}, "SEC-2026-0002"},
		{"references, stranger", Inbound{Sender: "mallory@evil.test", Refs: []string{"copy1@ex.org"}}, ""},
		{"subject tag", Inbound{Sender: "rep@out.test", Subject: "Re: [SEC-2026-0001] overflow"}, "SEC-2026-0001"},
		{"subject tag, stranger", Inbound{Sender: "mallory@evil.test", Subject: "Re: [SEC-2026-0001] overflow"}, ""},
		{"sub-address beats subject", Inbound{Sender: "alice@ex.org", Detail: "SEC-2026-0002", Subject: "[SEC-2026-0001]"}, "SEC-2026-0002"},
		{"no sender", Inbound{Detail: "SEC-2026-0001"}, ""},
		{"nothing", Inbound{Sender: "rep@out.test", Subject: "new bug"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Thread(tt.in, l)
			var id ID
			if got != nil {
				id = got.ID
			}
			if id != tt.want {
				t.Errorf("Thread(%+v) = %q, want %q", tt.in, id, tt.want)
			}
		})
	}
}

func TestReceiveNew(t *testing.T) {
	r := Receive(nil, "SEC-2026-0007", Inbound{Sender: "Rep@Out.test", Subject: "bug", MessageID: "m1@out.test"}, t0)
	if !r.New || r.Incident.ID != "SEC-2026-0007" || r.Incident.Phase != PhaseTriage || r.Incident.Reporter != "rep@out.test" || !r.Incident.Opened.Equal(t0) {
		t.Fatalf("Receive new = %+v", r)
	}
	if len(r.Mail) != 2 || r.Mail[0].Template != "ack" || r.Mail[0].To != AudienceReporter || r.Mail[1].To != AudienceSRC || !r.Mail[1].Forward {
		t.Errorf("Receive new mail = %+v, want ack to reporter then report to SRC", r.Mail)
	}
	// RFC 3834: no acknowledgement of automatic mail.
	r = Receive(nil, "SEC-2026-0008", Inbound{Sender: "bot@out.test", Auto: true}, t0)
	if len(r.Mail) != 1 || r.Mail[0].To != AudienceSRC {
		t.Errorf("Receive auto mail = %+v, want only the SRC copy", r.Mail)
	}
}

func TestReceiveReply(t *testing.T) {
	incs, _, _ := fixture()
	inc := incs["SEC-2026-0001"]
	r := Receive(inc, "", Inbound{Sender: "alice@ex.org"}, t0)
	if r.New || r.Incident.Messages != inc.Messages+1 || !r.Incident.Updated.Equal(t0) {
		t.Fatalf("Receive reply = %+v", r)
	}
	if len(r.Mail) != 1 || r.Mail[0].To != AudienceSRC || r.Mail[0].Except != "alice@ex.org" {
		t.Errorf("Receive reply mail = %+v: committee replies stay inside the SRC", r.Mail)
	}
	r.Incident.FixTeam[0] = "changed"
	if inc.FixTeam[0] != "eng@ex.org" {
		t.Error("Receive mutated its input incident")
	}
}

func TestIDs(t *testing.T) {
	if got := FormatID(2026, 7); got != "SEC-2026-0007" {
		t.Errorf("FormatID = %q", got)
	}
	if got := FormatID(2026, 12345); got != "SEC-2026-12345" {
		t.Errorf("FormatID = %q", got)
	}
	for _, s := range []string{"SEC-2026-0001", "sec-2026-0001", " SEC-2026-12345 "} {
		if _, ok := ParseID(s); !ok {
			t.Errorf("ParseID(%q) failed", s)
		}
	}
	for _, s := range []string{"SEC-26-0001", "SEC-2026-01", "SEC-2026-0001x", "CVE-2026-0001", ""} {
		if _, ok := ParseID(s); ok {
			t.Errorf("ParseID(%q) accepted", s)
		}
	}
	if id, ok := SubjectTag("Re: [sec-2026-0003] x"); !ok || id != "SEC-2026-0003" {
		t.Errorf("SubjectTag = %q %v", id, ok)
	}
}
