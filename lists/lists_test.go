package lists

import (
	"errors"
	"testing"
)

func testRoster() *Roster {
	return &Roster{
		Lists: []List{
			{Name: Security, Address: "security@ex.org"},
			{Name: Distributors, Address: "distributors@ex.org", Encryption: "required"},
			{Name: Announce, Address: "announce@ex.org"},
		},
		Members: []Member{{Email: "alice@ex.org", Roles: []string{"src"}}, {Email: "ann@ex.org", Roles: []string{"associate"}}, {Email: "dist@vendor.test", Roles: []string{"distributor"}}},
	}
}

func TestRoute(t *testing.T) {
	r := testRoster()
	r.Governance = true
	tests := []struct {
		rcpt     string
		want     Target
		code     int
		enhanced string
	}{
		{"security@ex.org", Target{List: Security}, 0, ""},
		{"SECURITY@EX.ORG", Target{List: Security}, 0, ""},
		{"security+SEC-2026-0001@ex.org", Target{List: Security, Detail: "SEC-2026-0001"}, 0, ""},
		{"security+sec-2026-0001@ex.org", Target{List: Security, Detail: "sec-2026-0001"}, 0, ""},
		{"security+SEC-2026-9999@ex.org", Target{List: Security, Detail: "SEC-2026-9999"}, 0, ""}, // exists or not: same answer
		{"security+bounces@ex.org", Target{List: Security, Detail: DetailBounces}, 0, ""},
		{"security+whatever@ex.org", Target{}, 550, "5.1.1"},
		// Per-copy bounce addresses (IsVERP): the shape only, any token.
		{"security+bounces-abcdefghijklmnopqrstuvwxyz@ex.org", Target{List: Security, Detail: "bounces-abcdefghijklmnopqrstuvwxyz"}, 0, ""},
		{"Security+Bounces-ABCDEFGHIJKLMNOPQRSTUVWX27@ex.org", Target{List: Security, Detail: "bounces-abcdefghijklmnopqrstuvwx27"}, 0, ""},
		{"distributors+bounces-2345672345672345672345672a@ex.org", Target{List: Distributors, Detail: "bounces-2345672345672345672345672a"}, 0, ""},
		{"security+bounces-abcdefghijklmnopqrstuvwxy@ex.org", Target{}, 550, "5.1.1"},   // 25
		{"security+bounces-abcdefghijklmnopqrstuvwxyza@ex.org", Target{}, 550, "5.1.1"}, // 27
		{"security+bounces-abcdefghijklmnopqrstuvwxy1@ex.org", Target{}, 550, "5.1.1"},  // not base32
		{"security+bounces-abcdefghijklmnopqrstuvwxy=@ex.org", Target{}, 550, "5.1.1"},
		{"security+bounces-42-abcdefgh27@ex.org", Target{}, 550, "5.1.1"},
		{"security+bounces-SEC-2026-0001@ex.org", Target{}, 550, "5.1.1"},
		{"distributors+bounces-sec-2026-0001@ex.org", Target{}, 550, "5.1.1"},
		{"security+@ex.org", Target{}, 550, "5.1.1"},
		{"announce+subscribe@ex.org", Target{List: Announce, Detail: DetailSubscribe}, 0, ""},
		{"announce+unsubscribe@ex.org", Target{List: Announce, Detail: DetailUnsubscribe}, 0, ""},
		{"announce@ex.org", Target{}, 550, "5.7.1"},
		{"announce+bounces-SEC-2026-0001@ex.org", Target{List: Announce, Detail: "bounces-sec-2026-0001"}, 0, ""},
		{"announce+confirm-abc123@ex.org", Target{List: Announce, Detail: "confirm-abc123"}, 0, ""},
		{"announce+post@ex.org", Target{}, 550, "5.1.1"},
		{"distributors@ex.org", Target{List: Distributors}, 0, ""},
		{"distributors+apply@ex.org", Target{List: Distributors, Detail: DetailApply}, 0, ""},
		{"Distributors+Apply@ex.org", Target{List: Distributors, Detail: DetailApply}, 0, ""},
		{"distributors+bounces@ex.org", Target{List: Distributors, Detail: DetailBounces}, 0, ""},
		{"distributors+join@ex.org", Target{}, 550, "5.1.1"},
		{"distributors+GOV-2026-0001@ex.org", Target{}, 550, "5.1.1"},
		{"security+GOV-2026-0003@ex.org", Target{List: Security, Detail: "GOV-2026-0003"}, 0, ""},
		{"security+GOV-2026@ex.org", Target{}, 550, "5.1.1"},
		{"security+XYZ-2026-0003@ex.org", Target{}, 550, "5.1.1"},
		{"postmaster@ex.org", Target{}, 550, "5.1.1"},
		{"security@other.org", Target{}, 550, "5.1.1"},
		{"victim@gmail.com", Target{}, 550, "5.1.1"},
	}
	for _, tt := range tests {
		t.Run(tt.rcpt, func(t *testing.T) {
			got, err := r.Route(tt.rcpt)
			if tt.code == 0 {
				if err != nil || got != tt.want {
					t.Fatalf("Route(%q) = %+v, %v; want %+v, nil", tt.rcpt, got, err, tt.want)
				}
				return
			}
			var ref *Refusal
			if !errors.As(err, &ref) {
				t.Fatalf("Route(%q) = %+v, %v; want a refusal %d", tt.rcpt, got, err, tt.code)
			}
			if c, e := ref.SMTPStatus(); c != tt.code || e != tt.enhanced {
				t.Errorf("Route(%q) status = %d %s, want %d %s", tt.rcpt, c, e, tt.code, tt.enhanced)
			}
		})
	}
}

// TestRouteWithoutGovernance: until the daemon handles governance mail, its
// addresses are unknown recipients, as before.
func TestRouteWithoutGovernance(t *testing.T) {
	r := testRoster()
	for _, rcpt := range []string{"distributors+apply@ex.org", "security+GOV-2026-0003@ex.org"} {
		if got, err := r.Route(rcpt); err == nil {
			t.Errorf("Route(%q) = %+v without Governance; want a refusal", rcpt, got)
		}
	}
}

func TestRoster(t *testing.T) {
	r := testRoster()
	if !r.IsCommittee("ALICE@ex.org") || !r.IsCommittee("ann@ex.org") || r.IsCommittee("dist@vendor.test") || r.IsCommittee("x@y.z") {
		t.Error("IsCommittee wrong")
	}
	if got := r.WithRole("src"); len(got) != 1 || got[0].Email != "alice@ex.org" {
		t.Errorf("WithRole(src) = %v", got)
	}
	if !r.IsOurs("security@ex.org") || !r.IsOurs("security+bounces@ex.org") || r.IsOurs("reporter@else.test") {
		t.Error("IsOurs wrong")
	}
	if got := r.List(Security).SubAddress("SEC-2026-0001"); got != "security+SEC-2026-0001@ex.org" {
		t.Errorf("SubAddress = %q", got)
	}
}

func TestListID(t *testing.T) {
	l := List{Name: Security, Address: "security@example.org"}
	if got, want := l.ListID(), "<security.example.org>"; got != want {
		t.Errorf("ListID() = %q, want %q", got, want)
	}
}
