package listd

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
)

// TestDistributorHeaders is the header table of distributors@ (docs/
// threat-model.md G1): a committee member's post, encrypted to the list and
// signed, with its recipient fields varied. A post is accepted only when
// every recipient field parses and names the list or the committee alone;
// otherwise it is refused, reaches no distributor, is kept in quarantine,
// and the SRC is alerted without the outside address.
func TestDistributorHeaders(t *testing.T) {
	const evil = "outsider@evil.example"
	long := strings.Repeat("bob@ex.test, ", 400) + "distributors@ex.test" // 5 KB of allowed addresses
	tests := []struct {
		name   string
		fields [][2]string // added in order to the outer header, after From
		code   int         // 0: accepted
		enh    string
		reply  string // in the refusal
	}{
		{"the list alone", [][2]string{{"To", "distributors@ex.test"}}, 0, "", ""},
		{"the list and a committee member", [][2]string{{"To", "Embargo <DISTRIBUTORS@ex.test>"}, {"Cc", "bob@ex.test"}}, 0, "", ""},
		{"undisclosed recipients group", [][2]string{{"To", "undisclosed-recipients:;"}, {"Cc", "distributors@ex.test"}}, 0, "", ""},
		{"an outsider in a comment only", [][2]string{{"To", "distributors@ex.test (" + evil + ")"}}, 0, "", ""},
		{"no recipient field", nil, 0, "", ""},
		{"outside To", [][2]string{{"To", "distributors@ex.test, " + evil}}, 550, "5.7.1", "outside the embargo list in To"},
		{"outside Cc", [][2]string{{"To", "distributors@ex.test"}, {"Cc", evil}}, 550, "5.7.1", "in Cc"},
		{"outside in a second Cc field", [][2]string{{"To", "distributors@ex.test"}, {"Cc", "bob@ex.test"}, {"Cc", evil}}, 550, "5.7.1", "in Cc"},
		{"outside Bcc", [][2]string{{"To", "distributors@ex.test"}, {"Bcc", evil}}, 550, "5.7.1", "in Bcc"},
		{"outside Resent-To", [][2]string{{"To", "distributors@ex.test"}, {"Resent-To", evil}}, 550, "5.7.1", "in Resent-To"},
		{"outside Resent-Cc", [][2]string{{"To", "distributors@ex.test"}, {"Resent-Cc", evil}}, 550, "5.7.1", "in Resent-Cc"},
		{"the security list is not the committee", [][2]string{{"To", "distributors@ex.test"}, {"Cc", "security@ex.test"}}, 550, "5.7.1", "in Cc"},
		{"outside group member", [][2]string{{"To", "friends: " + evil + ";"}}, 550, "5.7.1", "in To"},
		{"encoded display name of the list", [][2]string{{"To", "=?utf-8?q?distributors=40ex.test?= <" + evil + ">"}}, 550, "5.7.1", "in To"},
		{"encoded word as the address", [][2]string{{"To", "=?utf-8?q?outsider=40evil.example?="}}, 550, "5.7.1", "To header of this post cannot be parsed"},
		{"unparsable: semicolon", [][2]string{{"To", "distributors@ex.test, " + evil + ";"}}, 550, "5.7.1", "To header of this post cannot be parsed"},
		{"unparsable: unterminated quote", [][2]string{{"To", `"Embargo list <distributors@ex.test>, ` + evil}}, 550, "5.7.1", "cannot be parsed"},
		{"unparsable: broken angle", [][2]string{{"To", "distributors@ex.test"}, {"Cc", "<broken"}}, 550, "5.7.1", "Cc header of this post cannot be parsed"},
		{"very long To", [][2]string{{"To", long}}, 550, "5.7.1", "longer than 4096 bytes"},
		{"duplicate To", [][2]string{{"To", "distributors@ex.test"}, {"To", evil}}, 554, "5.6.0", "more than one To"},
	}
	k := newStoreKeys(t)
	sko := keys.Options{Now: func() time.Time { return mon.Add(-time.Minute) }}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, db := storeService(t, k)
			var h mail.Header
			h.SetAddressList("From", []*mail.Address{{Address: "alice@ex.test"}})
			for _, f := range tc.fields {
				h.Add(f[0], f[1])
			}
			h.SetMessageID("post@ex.test")
			raw, err := keys.Encrypt(h, []byte("Subject: heads-up\r\n"+textEntity+"A notice is coming.\r\n"), k.dists, k.alice, sko)
			if err != nil {
				t.Fatal(err)
			}
			err = s.Handle(context.Background(), Envelope{From: "alice@ex.test", To: []string{"distributors@ex.test"}}, raw)
			var r *lists.Refusal
			switch {
			case tc.code == 0 && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.code != 0 && (!errors.As(err, &r) || r.Code != tc.code || r.Enhanced != tc.enh || !strings.Contains(r.Text, tc.reply)):
				t.Fatalf("reply %v, want %d %s …%s…", err, tc.code, tc.enh, tc.reply)
			}
			kinds, note := storedPost(t, db)
			snap := snapshot(t, db, k)
			if tc.code == 0 {
				if kinds["distributors-post"] != 1 || kinds["alert-distributors-refused"] != 0 || note != "distributors" {
					t.Errorf("accepted post: rows %v, archive note %q; want one distributor copy, no alert, archived", kinds, note)
				}
				return
			}
			if kinds["distributors-post"] != 0 || kinds["alert-distributors-refused"] != 2 || note != "quarantine" {
				t.Errorf("refused post: rows %v, archive note %q; want no distributor copy, an alert to alice and bob, quarantine", kinds, note)
			}
			if strings.Contains(snap, "evil.example") {
				t.Errorf("the outside address reached a queued message:\n%s", snap)
			}
			if !strings.Contains(snap, "A post to the embargo list from alice@ex.test was refused") {
				t.Errorf("the alert does not say who and what:\n%s", snap)
			}
		})
	}
}

// storedPost counts the queued rows by kind and gives the archive note of
// the one archived message.
func storedPost(t *testing.T, db *bolt.DB) (map[string]int, string) {
	t.Helper()
	kinds := map[string]int{}
	note := ""
	db.View(func(tx *bolt.Tx) error {
		rows, err := queue.List(tx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			kinds[r.Kind]++
		}
		c := tx.Bucket([]byte("messages")).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var rec incidentdb.Record
			if err := json.Unmarshal(v, &rec); err != nil {
				t.Fatal(err)
			}
			note = rec.Note
		}
		return nil
	})
	return kinds, note
}
