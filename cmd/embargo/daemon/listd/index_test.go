package listd

import (
	"regexp"
	"slices"
	"testing"
	"time"
)

// TestTokensAppend: the tokens of Message-IDs and thread anchors made one
// after the other sort in that order, millisecond by millisecond, so that
// the message-ID index files each commit's new entries at the end of its
// range instead of all over the current second's.
func TestTokensAppend(t *testing.T) {
	s := msClockService(t)
	var toks []string
	for range 200 {
		tok, err := s.token()
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	if !slices.IsSorted(toks) {
		t.Errorf("tokens made 1 ms apart do not sort in order: %q ...", toks[:4])
	}
	if len(slices.Compact(slices.Clone(toks))) != len(toks) || len(toks[0]) != 11+16 {
		t.Errorf("tokens not unique or not 27 hex digits: %q", toks[0])
	}
}

// TestMessageIDsAppend: the Message-IDs the service makes, one after the
// other, sort in that order (the index files them all at its one end), and
// each is the token alone: 27 lowercase hex digits, no kind
// (docs/threat-model.md D7).
func TestMessageIDsAppend(t *testing.T) {
	s := msClockService(t)
	var ids []string
	for range 200 {
		id, err := s.newMessageID("example.org")
		if err != nil {
			t.Fatal(err)
		}
		if !bareToken.MatchString(id) {
			t.Fatalf("Message-ID %q is not a bare token at the domain", id)
		}
		ids = append(ids, id)
	}
	if !slices.IsSorted(ids) {
		t.Errorf("Message-IDs made 1 ms apart do not sort in order: %q ...", ids[:4])
	}
}

var bareToken = regexp.MustCompile(`^[0-9a-f]{27}@example\.org$`)

// msClockService is a Service whose clock moves 1 ms at every reading.
func msClockService(t *testing.T) *Service {
	t.Helper()
	at := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	s, _ := storeService(t, newStoreKeys(t), func(o *Options) {
		o.Now = func() time.Time { at = at.Add(time.Millisecond); return at }
	})
	return s
}
