package senderauth

import (
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"
)

// TestStrip: fields claiming our authserv-id are removed, however written
// (case, comments, a version, folding, a quoted id); others' fields, the
// rest of the header and the body stay byte for byte (RFC 8601 §5).
func TestStrip(t *testing.T) {
	const id = "mx.ex.test"
	in := "Received: from x\r\n" +
		"Authentication-Results: mx.ex.test; dkim=pass header.d=out.test\r\n" +
		"authentication-results :  (forged) MX.EX.TEST. 1;\r\n\tspf=pass smtp.mailfrom=out.test\r\n" +
		"Authentication-Results: \"mx.ex.test\"; dmarc=pass header.from=out.test\r\n" +
		"Authentication-Results: mx.other.test; dkim=pass header.d=out.test\r\n" +
		"Authentication-Results: mx.ex.test.evil; dkim=pass header.d=out.test\r\n" +
		"X-Note: Authentication-Results: mx.ex.test; dkim=pass\r\n" +
		"From: rep@out.test\r\n" +
		"\r\n" +
		"Authentication-Results: mx.ex.test; dkim=pass (in the body, kept)\r\n"
	want := "Received: from x\r\n" +
		"Authentication-Results: mx.other.test; dkim=pass header.d=out.test\r\n" +
		"Authentication-Results: mx.ex.test.evil; dkim=pass header.d=out.test\r\n" +
		"X-Note: Authentication-Results: mx.ex.test; dkim=pass\r\n" +
		"From: rep@out.test\r\n" +
		"\r\n" +
		"Authentication-Results: mx.ex.test; dkim=pass (in the body, kept)\r\n"
	got, n := Strip([]byte(in), id)
	if string(got) != want || n != 3 {
		t.Errorf("Strip removed %d:\n%s\nwant:\n%s", n, got, want)
	}
	same := []byte("From: a@b.test\r\n\r\nbody\r\n")
	if got, n := Strip(same, id); n != 0 || &got[0] != &same[0] {
		t.Error("a message without our fields was copied or changed")
	}
	if got, n := Strip([]byte(in), ""); n != 0 || string(got) != in {
		t.Error("an empty id removed something")
	}
	// A header without a blank line, our field last.
	tail := "From: a@b.test\r\nAuthentication-Results: mx.ex.test; none"
	if got, n := Strip([]byte(tail), id); n != 1 || string(got) != "From: a@b.test\r\n" {
		t.Errorf("header without body: %q (%d)", got, n)
	}
	if strings.Count(want, "mx.ex.test;") != 2 {
		t.Fatal("the test's own expectation is wrong")
	}
}

// FuzzStrip: whatever the header, Strip keeps the body and every field it
// does not remove, and no field it leaves claims our id.
func FuzzStrip(f *testing.F) {
	f.Add([]byte("Authentication-Results: mx.ex.test; dkim=pass\r\nFrom: a@b\r\n\r\nbody"))
	f.Add([]byte("A: b\r\n c\r\nAuthentication-Results: (x(y)) \"mx.ex.test\" 1; none\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		out, n := Strip(msg, "mx.ex.test")
		if n == 0 && string(out) != string(msg) {
			t.Fatal("nothing removed, yet changed")
		}
		if len(out) > len(msg) {
			t.Fatal("grew")
		}
		end := headerEnd(out)
		if string(out[end:]) != string(msg[headerEnd(msg):]) {
			t.Fatal("the body changed")
		}
		for pos := 0; pos < end; {
			next := fieldEnd(out, pos, end)
			if claims(out[pos:next], "mx.ex.test") {
				t.Fatalf("a field claiming our id is left: %q", out[pos:next])
			}
			pos = next
		}
	})
}

// TestFieldSafe: nothing a sender chooses breaks our field's lines
// (docs/threat-model.md B2): a hostile domain is left out, a hostile
// authserv-id replaced.
func TestFieldSafe(t *testing.T) {
	for _, bad := range []string{"evil.test\r\nBcc: x@evil.test", "evil.test;dkim=pass", "a b", `"q"`, strings.Repeat("a", 300)} {
		if safeDomain(bad) != "" {
			t.Errorf("safeDomain(%q) passed", bad)
		}
	}
	f := formatField("mx.ex.test\r\nX: y", []authres.Result{&authres.DKIMResult{Value: authres.ResultPass, Domain: safeDomain("evil.test\r\nBcc: x")}})
	if f != "Authentication-Results: embargo.invalid;\r\n\tdkim=pass\r\n" {
		t.Errorf("field %q", f)
	}
}

// BenchmarkStrip: Strip runs on every message received, whether or not
// embargo checks senders itself; a report's header of a dozen fields, none
// claiming our id.
func BenchmarkStrip(b *testing.B) {
	msg := []byte("Received: from mx.out.test by mx.ex.test; Thu, 3 Dec 2026 12:00:00 +0000\r\n" +
		"Received: from client by mx.out.test; Thu, 3 Dec 2026 11:59:59 +0000\r\n" +
		"Authentication-Results: mx.out.test; dkim=pass header.d=out.test\r\n" +
		"DKIM-Signature: v=1; a=rsa-sha256; d=out.test; s=s; h=from:to:subject;\r\n bh=abc; b=def\r\n" +
		"From: Reporter <rep@out.test>\r\nTo: security@ex.test\r\nSubject: a report\r\n" +
		"Date: Thu, 3 Dec 2026 11:59:58 +0000\r\nMessage-ID: <1@out.test>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, n := Strip(msg, "ex.test"); n != 0 {
			b.Fatal(n)
		}
	}
}
