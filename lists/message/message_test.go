package message

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/embargo-project/embargo/lists"
)

func crlf(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }

const simple = `From: Rep Orter <Rep@Out.test>
To: security@ex.org
Subject: =?UTF-8?Q?overflow_in_=C3=A9_parser?=
Message-ID: <m1@out.test>
In-Reply-To: <m0@out.test>
References: <a@x> <b@x>
Date: Mon, 23 Nov 2026 09:00:00 +0000
Content-Type: text/plain; charset=utf-8

Hello,
the parser overflows.
`

func TestParseSimple(t *testing.T) {
	m, err := Parse(crlf(simple), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if m.From != "rep@out.test" || m.FromName != "Rep Orter" || m.Subject != "overflow in é parser" || m.MessageID != "m1@out.test" {
		t.Errorf("Parse header = %+v", m)
	}
	if want := []string{"m0@out.test", "b@x", "a@x"}; fmt.Sprint(m.Refs) != fmt.Sprint(want) {
		t.Errorf("Refs = %v, want %v", m.Refs, want)
	}
	if m.Text != "Hello,\nthe parser overflows.\n" || m.Auto || m.Date.IsZero() {
		t.Errorf("Parse body = %q auto=%v date=%v", m.Text, m.Auto, m.Date)
	}
}

func TestParseMultipart(t *testing.T) {
	raw := `From: a@out.test
Subject: x
Content-Type: multipart/mixed; boundary=b1

--b1
Content-Type: multipart/alternative; boundary=b2

--b2
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

caf=E9
--b2
Content-Type: text/html

<p>caf&eacute;</p>
--b2--
--b1
Content-Type: application/octet-stream
Content-Disposition: attachment; filename="../../etc/poc.py"
Content-Transfer-Encoding: base64

cHJpbnQoMSkK
--b1--
`
	m, err := Parse(crlf(raw), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Text != "café" && m.Text != "café\n" {
		t.Errorf("Text = %q, want café", m.Text)
	}
	if len(m.Attachments) != 1 || m.Attachments[0].Name != "poc.py" || string(m.Attachments[0].Data) != "print(1)\n" {
		t.Errorf("Attachments = %+v", m.Attachments)
	}
	if m.HTMLOmitted != 0 {
		t.Errorf("HTMLOmitted = %d with a text alternative", m.HTMLOmitted)
	}
}

// nested is a multipart message whose second part has header fields h
// (LF line ends; each field ends in LF) and the text "x".
func nested(h string) string {
	return "From: a@out.test\nContent-Type: multipart/mixed; boundary=b\n\n" +
		"--b\nContent-Type: text/plain\n\nfirst\n--b\n" + h + "\nx\n--b--\n"
}

func TestParseRefusals(t *testing.T) {
	deep := "From: a@out.test\nContent-Type: multipart/mixed; boundary=b0\n\n"
	for i := 1; i <= 20; i++ {
		deep += fmt.Sprintf("--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n", i-1, i)
	}
	many := "From: a@out.test\nContent-Type: multipart/mixed; boundary=b\n\n"
	for i := 0; i < 250; i++ {
		many += "--b\nContent-Type: text/plain\n\nx\n"
	}
	many += "--b--\n"
	fields := "From: a@out.test\n" + strings.Repeat("X-A: b\n", 600) + "\nbody\n"
	tests := []struct {
		name     string
		raw      string
		code     int
		enhanced string
	}{
		{"8-bit header", "From: a@out.test\nSubject: caf\xc3\xa9\n\nx\n", 554, "5.6.0"},
		{"NUL in header", "From: a@out.test\nSubject: a\x00b\n\nx\n", 554, "5.6.0"},
		{"header over limit", "From: a@out.test\nX-Big: " + strings.Repeat("a", 120<<10) + "\n\nx\n", 552, "5.3.4"},
		{"too many fields", fields, 554, "5.6.0"},
		{"two From", "From: a@out.test\nFrom: b@out.test\n\nx\n", 554, "5.6.0"},
		{"two Subjects", "From: a@out.test\nSubject: a\nSubject: b\n\nx\n", 554, "5.6.0"},
		{"two addresses in From", "From: a@out.test, b@out.test\n\nx\n", 554, "5.6.0"},
		{"unparseable From", "From: <<<\n\nx\n", 554, "5.6.0"},
		{"multipart without boundary", "From: a@out.test\nContent-Type: multipart/mixed\n\nx\n", 554, "5.6.0"},
		{"boundary over 70", "From: a@out.test\nContent-Type: multipart/mixed; boundary=" + strings.Repeat("b", 71) + "\n\nx\n", 554, "5.6.0"},
		{"unterminated multipart", "From: a@out.test\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nx\n", 554, "5.6.0"},
		{"too deep", deep, 554, "5.6.0"},
		{"too many parts", many, 554, "5.6.0"},
		{"huge From", "From: " + strings.Repeat("a", 5000) + "@out.test\n\nx\n", 554, "5.6.0"},
		// The bounds hold for the header of every MIME part, not only the
		// top-level one (docs/threat-model.md C1).
		{"nested header over limit", nested("X-Big: " + strings.Repeat("a", 120<<10) + "\n"), 552, "5.3.4"},
		{"nested header over limit, folded", nested("X-Big: a\n" + strings.Repeat(" "+strings.Repeat("a", 70)+"\n", 1800)), 552, "5.3.4"},
		{"nested part with too many fields", nested(strings.Repeat("X-A: b\n", 600)), 554, "5.6.0"},
		{"deeply nested header over limit", nested("Content-Type: multipart/mixed; boundary=c\n\n--c\nX-Big: " + strings.Repeat("a", 120<<10) + "\n\nx\n--c--"), 552, "5.3.4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(crlf(tt.raw), Limits{})
			var e *lists.Refusal
			if !errors.As(err, &e) {
				t.Fatalf("Parse = %v, want *lists.Refusal %d", err, tt.code)
			}
			if c, enh := e.SMTPStatus(); c != tt.code || enh != tt.enhanced {
				t.Errorf("Parse status = %d %s (%q), want %d %s", c, enh, e.Text, tt.code, tt.enhanced)
			}
			if strings.ContainsAny(e.Text, "\r\n") || e.Text == "" {
				t.Errorf("refusal text %q must be one human line", e.Text)
			}
		})
	}
}

func TestParseUTF8HeaderWithSMTPUTF8(t *testing.T) {
	if _, err := Parse(crlf("From: a@out.test\nSubject: caf\xc3\xa9\n\nx\n"), Limits{AllowUTF8: true}); err != nil {
		t.Errorf("UTF-8 header with SMTPUTF8: %v", err)
	}
}

func TestAuto(t *testing.T) {
	for _, h := range []string{"Auto-Submitted: auto-replied", "Auto-Submitted: auto-generated", "Precedence: bulk", "Precedence: list", "Precedence: junk", "List-Id: <x.y>", "List-Unsubscribe: <mailto:x@y>"} {
		m, err := Parse(crlf("From: a@out.test\n"+h+"\n\nx\n"), Limits{})
		if err != nil || !m.Auto {
			t.Errorf("%s: Auto = %v, %v; want true", h, m != nil && m.Auto, err)
		}
	}
	m, _ := Parse(crlf("From: a@out.test\nAuto-Submitted: no\n\nx\n"), Limits{})
	if m.Auto {
		t.Error("Auto-Submitted: no counted as automatic")
	}
}

func TestSanitizeInjection(t *testing.T) {
	// docs/threat-model.md B10: an encoded CR LF in the subject must not survive.
	m, err := Parse(crlf("From: a@out.test\nSubject: =?UTF-8?Q?x=0D=0ABcc:_a@evil.test?=\n\nx\n"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(m.Subject, "\r\n") {
		t.Errorf("Subject = %q keeps CR/LF", m.Subject)
	}
	if got := Sanitize("a\u202Eb\u2066c\x1bd"); got != "abcd" {
		t.Errorf("Sanitize = %q, want abcd", got)
	}
}

func TestMessageIDFallback(t *testing.T) {
	m, err := Parse(crlf("From: a@out.test\nIn-Reply-To: abc@example.org\nReferences: <ok@x> <bad id>\n\nx\n"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Refs) == 0 || m.Refs[0] != "abc@example.org" {
		t.Errorf("Refs = %v, want abc@example.org first", m.Refs)
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add(crlf(simple))
	f.Add(crlf("From: a@out.test\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain; charset=hz-gb-2312\n\n~{\n--b--\n"))
	f.Add(crlf("From: a@out.test\nContent-Type: text/plain; charset=x-unknown\nContent-Transfer-Encoding: x-bogus\n\nx\n"))
	f.Add(crlf("From: a@out.test\nContent-Transfer-Encoding: base64\n\n!!!notbase64\n"))
	f.Add([]byte("\x00\x00\r\n\r\n"))
	f.Add(crlf(nested(strings.Repeat("X:1\n", 600))))
	f.Add(crlf("From: a@out.test\nContent-Type: multipart/mixed; boundary=b\n\npre\n--b --\n--b \nX: 1\n\n--b\n: x\n\ny\n--b--\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := Parse(raw, Limits{})
		if err != nil {
			var e *lists.Refusal
			if !errors.As(err, &e) {
				t.Fatalf("Parse error %v is not a *lists.Refusal", err)
			}
			// The scan of the headers (bound.go) refuses nothing the walk
			// would take (docs/threat-model.md C1).
			if _, werr := parseBounded(raw, Limits{}, true, false); werr == nil {
				t.Fatalf("refused (%v), but the walk alone takes it", err)
			}
			return
		}
		if strings.ContainsAny(m.Subject+m.From+m.FromName, "\r\n") {
			t.Fatalf("header fields keep CR/LF: %q %q %q", m.Subject, m.From, m.FromName)
		}
	})
}

// TestParseHeader reads the same facts as Parse and never the body: a body
// that Parse refuses does not matter to it, a header that Parse refuses is
// refused the same way.
func TestParseHeader(t *testing.T) {
	full, err := Parse(crlf(simple), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHeader(crlf(simple), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if h.From != full.From || h.Subject != full.Subject || h.MessageID != full.MessageID ||
		fmt.Sprint(h.Refs) != fmt.Sprint(full.Refs) || !h.Date.Equal(full.Date) {
		t.Errorf("ParseHeader = %+v, want the facts of %+v", h, full)
	}
	if h.Text != "" || h.Attachments != nil {
		t.Errorf("ParseHeader read the body: %q", h.Text)
	}
	broken := "From: a@out.test\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nunterminated\n"
	if _, err := Parse(crlf(broken), Limits{}); err == nil {
		t.Fatal("Parse accepted an unterminated multipart")
	}
	bh, err := ParseHeader(crlf(broken), Limits{})
	if err != nil {
		t.Errorf("ParseHeader walked the body: %v", err)
	} else if err := bh.ParseBody(); err == nil {
		t.Error("ParseBody accepted an unterminated multipart")
	}
	if err := h.ParseBody(); err != nil || h.Text != full.Text {
		t.Errorf("ParseBody = %v, Text %q; want %q", err, h.Text, full.Text)
	}
	if err := h.ParseBody(); err == nil {
		t.Error("ParseBody read the body twice")
	}
	twoFrom := "From: a@out.test\nFrom: b@out.test\n\nx\n"
	if _, err := ParseHeader(crlf(twoFrom), Limits{}); err == nil {
		t.Error("ParseHeader accepted two From fields")
	}
}
