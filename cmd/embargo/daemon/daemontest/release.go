package daemontest

import (
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"

	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
)

// SignedAdvisory is a release message for the announce list l as
// daemon/listd writes it (PGP/MIME, signed by key), to store with
// announce.StartRelease: a release without an incident's commands.
func SignedAdvisory(t testing.TB, key *keys.Key, l lists.List, id string, now time.Time) []byte {
	t.Helper()
	var h mail.Header
	// A bare token, as listd makes it (docs/threat-model.md D7): the
	// hex of the ID, so that it stays unique per release.
	h.SetMessageID(hex.EncodeToString([]byte(strings.ToLower(id))) + "@" + l.Domain())
	h.SetDate(now)
	h.SetSubject("[Security Advisory] " + id)
	h.SetAddressList("To", []*mail.Address{{Address: l.Address}})
	h.SetAddressList("From", []*mail.Address{{Name: "Security Announcements", Address: l.Address}})
	inner := "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\nThe advisory " + id + ".\r\n"
	msg, err := keys.Sign(h, []byte(inner), key, keys.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return msg
}
