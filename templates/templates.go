// Package templates renders message bodies from embedded text/template files that
// an operator can override from a directory (docs/design.md §1). It renders bodies
// only: headers are always built in Go, so no field value can add or change a
// header (docs/threat-model.md B10, F4).
package templates

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/embargo-project/embargo/workflow"
)

//go:embed mail/*.txt
var embedded embed.FS

// Set is a parsed collection of templates.
type Set struct {
	t *template.Template
}

// ErrUnknown is returned for a template name that does not exist.
var ErrUnknown = errors.New("templates: unknown template")

// funcs are the helpers templates may call. They format, never fetch.
var funcs = template.FuncMap{
	// utc prints an instant as an absolute UTC time: T is never written in a
	// local zone (docs/process.md §6).
	"utc": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC (Monday)") },
	// quote prefixes every line with "> ", so quoted text can never start a
	// command line (docs/design.md §1).
	"quote": func(s string) string {
		lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
		for i, l := range lines {
			lines[i] = "> " + l
		}
		return strings.Join(lines, "\n")
	},
	"join": strings.Join,
	// The advisory's sentences are built from fields, each paragraph one
	// line: a break at a fixed place in the template fell mid-sentence
	// whatever the fields held, while mail clients and the advisory page
	// (white-space: pre-wrap) wrap a long line at the reader's width, and
	// the body is quoted-printable, so no line is too long for SMTP.
	//
	// clause makes a field read inside a sentence (no final full stop),
	// insentence lower-cases an actor's common first word ("A remote
	// attacker" → "a remote attacker"), and capfirst starts a sentence with
	// a field (workflow.Clause, InSentence, SentenceStart).
	"clause":     workflow.Clause,
	"insentence": workflow.InSentence,
	"capfirst":   workflow.SentenceStart,
	// count writes a number with its noun in the right number: "1 outside
	// channel", "3 distributors".
	"count": func(n int, one, many string) string {
		if n == 1 {
			return "1 " + one
		}
		return fmt.Sprintf("%d %s", n, many)
	},
}

// New parses the embedded templates, then any *.txt file in dir (if dir is not
// empty) under the same name, which replaces the embedded one.
func New(dir string) (*Set, error) {
	root := template.New("").Option("missingkey=error").Funcs(funcs)
	if err := parseFS(root, embedded, "mail"); err != nil {
		return nil, err
	}
	if dir != "" {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("templates: %w", err)
		}
		if err := parseFS(root, os.DirFS(dir), "."); err != nil {
			return nil, err
		}
	}
	return &Set{t: root}, nil
}

func parseFS(root *template.Template, fsys fs.FS, dir string) error {
	names, err := fs.Glob(fsys, filepath.Join(dir, "*.txt"))
	if err != nil {
		return fmt.Errorf("templates: %w", err)
	}
	for _, n := range names {
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return fmt.Errorf("templates: %w", err)
		}
		name := strings.TrimSuffix(filepath.Base(n), ".txt")
		if _, err := root.New(name).Parse(string(b)); err != nil {
			return fmt.Errorf("templates: %s: %w", n, err)
		}
	}
	return nil
}

// Render executes the named template. The result has LF line ends and ends with
// exactly one newline; callers convert to CRLF when they build the message.
func (s *Set) Render(name string, data any) (string, error) {
	t := s.t.Lookup(name)
	if t == nil {
		return "", fmt.Errorf("%w %q", ErrUnknown, name)
	}
	// A Builder hands its bytes over as the string without a copy; most
	// bodies fit the first kilobyte (renders happen inside the intake's
	// write transaction, where every allocation counts).
	var b strings.Builder
	b.Grow(1024)
	if err := t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("templates: render %s: %w", name, err)
	}
	out := b.String()
	if body := strings.TrimRight(out, "\n"); len(body) != len(out)-1 {
		return body + "\n", nil
	}
	return out, nil // already ends in exactly one newline
}

// Names lists the templates, for `embargo check`.
func (s *Set) Names() []string {
	var out []string
	for _, t := range s.t.Templates() {
		if t.Name() != "" {
			out = append(out, t.Name())
		}
	}
	return out
}
