package message

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/embargo-project/embargo/lists"
)

// boundBombs are part headers that go-message would read whole before the
// walk refuses them: each is refused, by the scan, before any parse.
func boundBombs() map[string]string {
	const room = 4 << 20
	mixed := "From: a@out.test\nContent-Type: multipart/mixed; boundary=b\n\n"
	parts := func(n int) string {
		return strings.Repeat("--b\nContent-Type: text/plain\n\nx\n", n)
	}
	tiny := strings.Repeat("X:1\n", room/4)
	return map[string]string{
		// 800 000 fields of five bytes: the bomb the daemon measured at
		// 2.6 GiB for eight at once.
		"tiny fields":       mixed + "--b\n" + tiny + "\nx\n--b--\n",
		"one field folded":  mixed + "--b\nX-F: a\n" + strings.Repeat(" f\n", room/3) + "\nx\n--b--\n",
		"after a good part": mixed + "--b\nContent-Type: text/plain\n\nfine\n--b\n" + tiny + "\nx\n--b--\n",
		"nested two deep":   mixed + "--b\nContent-Type: multipart/mixed; boundary=c\n\n--c\n" + tiny + "\nx\n--c--\n--b--\n",
		"in the preamble":   mixed + "preamble\n--b --\n--b\n" + tiny + "\nx\n--b--\n",
		"the 201st entity":  mixed + parts(199) + "--b\n" + tiny + "\nx\n--b--\n",
		"at depth 17":       nestedTo(17, tiny),
		"LF line ends":      "From: a@out.test\nContent-Type: multipart/mixed; boundary=\"b\"\n\n--b\n" + strings.Repeat("X:1\n", 600) + "\nx\n--b--\n",
		"top-level fields":  "From: a@out.test\n" + strings.Repeat("X:1\n", 20000) + "\nx\n",
	}
}

// nestedTo is a message whose innermost part, at depth, has the header h.
func nestedTo(depth int, h string) string {
	s := "From: a@out.test\nContent-Type: multipart/mixed; boundary=n0\n\n"
	for i := 1; i < depth; i++ {
		s += fmt.Sprintf("--n%d\nContent-Type: multipart/mixed; boundary=n%d\n\n", i-1, i)
	}
	s += fmt.Sprintf("--n%d\n%s\nx\n", depth-1, h)
	for i := depth - 1; i >= 0; i-- {
		s += fmt.Sprintf("--n%d--\n", i)
	}
	return s
}

// TestBoundHeaders (docs/threat-model.md C1): every part header over a
// limit is refused before go-message reads it, with a few KiB allocated
// for a 4 MiB bomb; the walk without the scan refuses each of them too,
// after allocating hundreds of MiB.
func TestBoundHeaders(t *testing.T) {
	for name, raw := range boundBombs() {
		t.Run(name, func(t *testing.T) {
			msg := crlf(raw)
			if strings.HasPrefix(name, "LF") {
				msg = []byte(raw)
			}
			var err error
			alloc := allocated(func() { _, err = ParseHeader(msg, Limits{}) })
			var r *lists.Refusal
			if !errors.As(err, &r) || r.Code != 552 && r.Code != 554 {
				t.Fatalf("ParseHeader = %v, want a 552 or 554 refusal", err)
			}
			if alloc > 1<<20 {
				t.Errorf("refusing a %d KiB message allocated %d KiB: the header was parsed", len(msg)>>10, alloc>>10)
			}
			if _, err := parseBounded(msg, Limits{}, true, false); err == nil {
				t.Errorf("the walk accepts what the scan refused (%v)", r)
			}
		})
	}
}

func allocated(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// TestBoundHeadersTakesWhatTheWalkTakes: the scan refuses nothing the walk
// accepts, at the limits and in the layouts go-message tolerates (LF line
// ends, transport padding, a body that starts with the delimiter, a field
// without a name, a folded Content-Type, a quoted boundary).
func TestBoundHeadersTakesWhatTheWalkTakes(t *testing.T) {
	mixed := "From: a@out.test\nContent-Type: multipart/mixed; boundary=b\n\n"
	fields := func(n int) string { return strings.Repeat("X-A: b\n", n) }
	atLimit := "X-Big: " + strings.Repeat("a", 100<<10-len("X-Big: \r\n")-2) + "\n"
	many := mixed
	for range 199 {
		many += "--b\nContent-Type: text/plain\n\nx\n"
	}
	msgs := map[string]string{
		"500 fields in a part":     mixed + "--b\n" + fields(499) + "Content-Type: text/plain\n\nx\n--b--\n",
		"a part header at 100 KiB": mixed + "--b\n" + atLimit + "\nx\n--b--\n",
		"200 entities":             many + "--b--\n",
		"16 deep":                  nestedTo(16, fields(499)+"Content-Type: text/plain\n"),
		"transport padding":        mixed + "--b  \n" + fields(500) + "\nx\n--b \t\n" + fields(500) + "\ny\n--b--  \n",
		"empty body":               mixed + "--b\n" + fields(500) + "\n--b\n" + fields(500) + "\n\nz\n--b--\n",
		"unnamed fields":           mixed + "--b\n" + fields(500) + strings.Repeat(": x\n", 50) + "\nx\n--b--\n",
		"folded Content-Type":      "From: a@out.test\nContent-Type: multipart/mixed;\n boundary=\"b c\"\n\n--b c\n" + fields(500) + "\nx\n--b c--\n",
		"boundary in the body":     mixed + "--b\n" + fields(500) + "\n--bx\n-- b\n--b\n" + fields(500) + "\ny\n--b--\n",
		"epilogue":                 mixed + "--b\n" + fields(500) + "\nx\n--b--\n" + strings.Repeat("X:1\n", 2000),
	}
	for name, raw := range msgs {
		t.Run(name, func(t *testing.T) {
			variants := [][]byte{crlf(raw)}
			if len(raw) < 100<<10 {
				variants = append(variants, []byte(raw)) // LF line ends, as go-message takes them
			}
			for _, msg := range variants {
				if _, err := parseBounded(msg, Limits{}, true, false); err != nil {
					t.Fatalf("the walk refuses the fixture: %v", err)
				}
				if err := boundHeaders(msg, Limits{}.withDefaults()); err != nil {
					t.Errorf("the scan refuses what the walk takes: %v", err)
				}
			}
		})
	}
}

// BenchmarkBoundHeaders is the cost of the scan on a 10 MiB report of a
// text part and 40 base64 attachments, beside Parse of it (which runs the
// scan first).
func BenchmarkBoundHeaders(b *testing.B) {
	line := strings.Repeat("QUJD", 19) + "\n"
	raw := "From: a@out.test\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nsee attached\n"
	for i := range 40 {
		raw += fmt.Sprintf("--b\nContent-Type: application/octet-stream; name=\"p%d.bin\"\nContent-Transfer-Encoding: base64\n\n", i) +
			strings.Repeat(line, (10<<20)/40/len(line))
	}
	msg := crlf(raw + "--b--\n")
	lim := Limits{}.withDefaults()
	b.Run("scan", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if err := boundHeaders(msg, lim); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if _, err := Parse(msg, lim); err != nil {
				b.Fatal(err)
			}
		}
	})
}
