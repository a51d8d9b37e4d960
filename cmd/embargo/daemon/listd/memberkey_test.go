package listd

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
)

// TestMemberAttachedKeyIgnored: a key attached to a member's mail is never
// taken (docs/threat-model.md D5: members' keys are pinned in the
// configuration and change only by it or by /member key under quorum). A
// committee member and a distributor each report with a new key attached,
// in clear and signed by their pinned key: no incident pins or keeps the
// key, the SRC gets no reporter-key alert, the keyring and the roster keep
// the pinned keys, and nothing queued is encrypted to the attached key.
func TestMemberAttachedKeyIgnored(t *testing.T) {
	k := newStoreKeys(t)
	s, db := storeService(t, k)
	sko := keys.Options{Now: func() time.Time { return mon.Add(-time.Minute) }}
	pinned := map[string]*keys.Key{"alice@ex.test": k.alice, "dist@vendor.test": k.dist}
	var attached []*keys.Key
	n := 0
	for addr, own := range pinned {
		fresh, err := keys.GenerateListKey("new key", addr, ko)
		if err != nil {
			t.Fatal(err)
		}
		attached = append(attached, fresh)
		for _, signed := range []bool{false, true} {
			n++
			mid := fmt.Sprintf("mk%d@%s", n, strings.SplitN(addr, "@", 2)[1])
			subject := fmt.Sprintf("finding %d", n)
			raw := append([]byte(fmt.Sprintf("From: %s\r\nTo: security@ex.test\r\nSubject: %s\r\nMessage-ID: <%s>\r\nDate: Mon, 23 Nov 2026 08:59:00 +0000\r\n",
				addr, subject, mid)), keyEntity("a finding; here is my new key", fresh)...)
			if signed {
				raw, err = keys.Sign(outerHeader(addr, "security@ex.test", subject, mid), keyEntity("a finding; here is my new key", fresh), own, sko)
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Handle(context.Background(), Envelope{From: addr, To: []string{"security@ex.test"}}, raw); err != nil {
				t.Fatalf("report from %s (signed %v): %v", addr, signed, err)
			}
		}
	}

	ids := incidentIDs(t, db)
	if len(ids) != n {
		t.Fatalf("%d incidents, want %d", len(ids), n)
	}
	for _, id := range ids {
		inc := getIncident(t, db, id)
		if inc.PinnedReporterKey != "" || len(inc.ReporterKeys) != 0 {
			t.Errorf("%s (reporter %s): pinned %q, %d keys kept; a member's attached key must be ignored",
				id, inc.Reporter, inc.PinnedReporterKey, len(inc.ReporterKeys))
		}
	}
	if alerts := rowsOf(t, db, "alert-reporter-key"); len(alerts) != 0 {
		t.Errorf("%d reporter-key alerts for members' own keys", len(alerts))
	}
	for _, fresh := range attached {
		if _, ok := s.o.Members.Lookup(fresh.Fingerprint()); ok {
			t.Errorf("the keyring holds the attached key %s", fresh.Fingerprint())
		}
	}
	for addr, own := range pinned {
		if m, ok := s.o.Roster.Member(addr); !ok || m.Fingerprint != own.Fingerprint() {
			t.Errorf("roster entry of %s: %+v, want the pinned %s", addr, m, own.Fingerprint())
		}
	}
	for _, row := range sealRows(t, s, allRows(t, db)) {
		for _, fresh := range attached {
			if _, err := keys.Decrypt(row.Data, fresh, nil, keys.Options{Now: func() time.Time { return mon }}); err == nil {
				t.Errorf("row %d (%s to %v) is encrypted to an attached key", row.ID, row.Kind, row.To)
			}
		}
	}
}

// allRows is every queued row with its data.
func allRows(t *testing.T, db *bolt.DB) []queue.Row {
	t.Helper()
	var out []queue.Row
	err := db.View(func(tx *bolt.Tx) error {
		rows, err := queue.List(tx)
		if err != nil {
			return err
		}
		for _, r := range rows {
			full, err := queue.Get(tx, r.ID)
			if err != nil {
				return err
			}
			out = append(out, full)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
