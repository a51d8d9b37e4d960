package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// headerWriters are the only files of the module (tests aside) that may
// write a message header field: by go-message's setters, or as text. A
// value put into a header by text, or by textproto's raw Set, goes out as
// it is, so a CR or LF in it adds fields of the sender's choosing
// (docs/threat-model.md B2). Each file here either takes values that cannot
// carry a line break or sanitises them, and its output is fuzzed where a
// member or a stranger chooses a value. A new site elsewhere fails
// TestHeadersOnlyFromComposers: give it to a composer instead, or add it
// here with the reason.
var headerWriters = map[string]string{
	"cmd/embargo/daemon/listd/compose.go":      "the service's composer: every value cleaned, FuzzCompose and FuzzReportRender",
	"cmd/embargo/daemon/listd/distributors.go": "the outer Subject of a distributor's notice, set with SetSubject (encoded words for any control character)",
	"cmd/embargo/daemon/announce/compose.go":   "the announce list's composer: List-* values built from validated addresses and tokens",
	"cmd/embargo/daemon/announce/dkim.go":      "the DKIM-Signature of a release's shared body: algorithm, domain and selector from the validated configuration",
	"cmd/embargo/daemon/queue/maildir.go":      "Return-Path and Delivered-To of a Maildir file: envelope addresses, parsed from SMTP command lines",
	"cmd/embargo/daemon/queue/dkim.go":         "a fixed message the DKIM signer signs once at start to check its key",
	"cmd/embargo/drill/drill.go":               "the drill's reporter and members writing mail to the daemon under test (inbound, not ours)",
	"cmd/embargo/drill/mail.go":                "the drill's reporter and members writing mail to the daemon under test (inbound, not ours)",
	"keys/encrypt.go":                          "PGP/MIME's fixed fields (RFC 3156 §4) and a content type from mime.FormatMediaType",
	"keys/stream.go":                           "PGP/MIME's fixed fields (RFC 3156 §4) and a boundary of our own",
	"keys/sign.go":                             "PGP/MIME's fixed fields (RFC 3156 §5) and a content type from mime.FormatMediaType",
	"keys/fields.go":                           "the protected header's content type (RFC 3156 §5), set with SetContentType",
	"keys/pgpmime.go":                          "a text entity made to parse inline-signed text; its charset is checked for line breaks and quotes",
	"cmd/embargo/daemon/daemontest/harness.go": "the test harness's clients (inbound test mail)",
	"cmd/embargo/daemon/daemontest/mime.go":    "the test harness's clients (inbound test mail)",
	"cmd/embargo/daemon/daemontest/release.go": "the test harness's stored releases: fixed fields and the test's own release ID",
	"contrib/bench/load/main.go":               "the benchmark's load client (inbound test mail)",
	"workflow/fields.go":                       "no header: error messages that start with a field's name (\"references: …\")",
	"lists/message/bound.go":                   "no header written: an inbound part's Content-Type value set into a throw-away header for go-message to parse it",

	"cmd/embargo/daemon/senderauth/senderauth.go": "our Authentication-Results field on the archived inbound copy: a validated authserv-id, domains of letters, digits, dots and hyphens only, go-msgauth's result tokens; TestFieldSafe",
}

// headerField names the fields of a message header (RFC 5322 §3.6,
// RFC 2045, RFC 2369, RFC 6376 and the extension fields we write).
const headerField = `(?:from|to|cc|bcc|subject|reply-to|sender|message-id|in-reply-to|references|date|mime-version|content-[a-z-]+|list-[a-z-]+|x-[a-z-]+|auto-submitted|precedence|dkim-signature|autocrypt|return-path|received|delivered-to|authentication-results)`

var (
	headerLine = regexp.MustCompile(`(?i)(?:^|\n)` + headerField + `:[ \t]`)
	headerName = regexp.MustCompile(`(?i)^` + headerField + `$`)
	// go-message's mail.Header and textproto.Header setters.
	headerSetters = []string{"SetAddressList", "SetSubject", "SetMessageID", "SetMsgIDList", "SetDate", "SetText", "SetContentType", "SetContentDisposition"}
)

// headerSites lists where a Go file writes a header field: a string
// literal holding a field's line ("Subject: %s", "\r\nTo: "), a call of a
// header setter, or Set/Add of a field named by a literal.
func headerSites(fset *token.FileSet, f *ast.File) []string {
	var sites []string
	ast.Inspect(f, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.BasicLit:
			if s, err := strconv.Unquote(x.Value); err == nil && x.Kind == token.STRING && headerLine.MatchString(s) {
				sites = append(sites, fset.Position(x.Pos()).String()+": "+x.Value)
			}
		case *ast.CallExpr:
			sel, ok := x.Fun.(*ast.SelectorExpr)
			if !ok {
				break
			}
			if slices.Contains(headerSetters, sel.Sel.Name) {
				sites = append(sites, fset.Position(x.Pos()).String()+": "+sel.Sel.Name)
			} else if (sel.Sel.Name == "Set" || sel.Sel.Name == "Add") && len(x.Args) == 2 {
				if l, ok := x.Args[0].(*ast.BasicLit); ok && l.Kind == token.STRING {
					if s, _ := strconv.Unquote(l.Value); headerName.MatchString(s) {
						sites = append(sites, fset.Position(x.Pos()).String()+": "+sel.Sel.Name+" "+l.Value)
					}
				}
			}
		}
		return true
	})
	return sites
}

// TestHeadersOnlyFromComposers is the static check that no template, no
// Sprintf and no raw Set writes a header field outside the files listed in
// headerWriters (docs/threat-model.md B2). The web package's fields are
// HTTP's, which net/http refuses to write with a line break in them.
func TestHeadersOnlyFromComposers(t *testing.T) {
	root := filepath.Join("..", "..")
	found := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") || rel == "cmd/embargo/daemon/web") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		sites := headerSites(fset, f)
		if len(sites) == 0 {
			return nil
		}
		found[rel] = true
		if _, ok := headerWriters[rel]; !ok {
			t.Errorf("%s writes header fields outside the composers (docs/threat-model.md B2): build them in a composer, or list the file in headerWriters with the reason:\n\t%s", rel, strings.Join(sites, "\n\t"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) < 10 {
		t.Fatalf("found header fields in %d files only: the walk missed the module", len(found))
	}
	for f := range headerWriters {
		if !found[f] {
			t.Errorf("headerWriters lists %s, which writes no header field any more: remove it", f)
		}
	}
}

// TestHeaderSites checks the scanner on what it must and must not report.
func TestHeaderSites(t *testing.T) {
	src := `package p
func f() {
	_ = fmt.Sprintf("Subject: %s\r\n", s)
	_ = "x\r\nReply-To: " + s
	h.SetSubject(s)
	h.Set("List-Id", s)
	h.Add("x-loop", s)
	_ = fmt.Sprintf("value: %s", s)
	_ = "Subject"
	m.Set("key", s)
	h.Set(name, s)
}`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := headerSites(fset, f)
	if len(got) != 5 {
		t.Fatalf("found %d sites, want 5:\n%s", len(got), strings.Join(got, "\n"))
	}
	for i, want := range []string{"Subject: %s", "Reply-To: ", "SetSubject", `Set "List-Id"`, `Add "x-loop"`} {
		if !strings.Contains(got[i], want) {
			t.Errorf("site %d = %q, want %q in it", i, got[i], want)
		}
	}
}
