package announce

import (
	"bytes"
	"io"
	"testing"

	gomessage "github.com/emersion/go-message"
)

// TestTextEntityLoneCR: a lone CR is a line end, and the line end after a
// byte that quoted-printable encodes survives (Go's quotedprintable.Writer
// drops it; RFC 2045 §6.7).
func TestTextEntityLoneCR(t *testing.T) {
	b, err := textEntity("a\r\x1d\nb\n")
	if err != nil {
		t.Fatal(err)
	}
	e, err := gomessage.Read(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(e.Body)
	if err != nil {
		t.Fatal(err)
	}
	if want := "a\r\n\x1d\r\nb\r\n"; string(got) != want {
		t.Errorf("reads back as %q, want %q", got, want)
	}
}
