package workflow

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestPurity keeps every package under workflow/ and lists/ free of I/O and
// of the wall clock (docs/design.md §1, package layering): they take time as
// an argument and return decisions, so every rule can be tested on a fake
// clock. Whatever touches the store, the network or the clock lives under
// cmd/embargo/daemon instead.
func TestPurity(t *testing.T) {
	forbiddenImports := []string{"net", "net/http", "net/smtp", "os", "os/exec", "go.etcd.io/bbolt", "github.com/emersion/go-smtp", "github.com/ProtonMail/go-crypto"}
	forbiddenCalls := map[string]bool{"Now": true, "Sleep": true, "After": true, "NewTimer": true, "NewTicker": true, "Tick": true, "AfterFunc": true, "Since": true, "Until": true}
	var dirs []string
	for _, root := range []string{".", "../lists"} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			// testdata holds no code; a package named …test (recordtest) is a
			// test helper, never linked into the daemon.
			if err == nil && d.IsDir() && d.Name() != "testdata" && !strings.HasSuffix(d.Name(), "test") {
				dirs = append(dirs, p)
			}
			if err == nil && d.IsDir() && d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(dirs) < 5 {
		t.Fatalf("found only %v: the walk is broken", dirs)
	}
	for _, dir := range dirs {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			fset := token.NewFileSet()
			af, err := parser.ParseFile(fset, f, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				for _, bad := range forbiddenImports {
					if p == bad || strings.HasPrefix(p, bad+"/") {
						t.Errorf("%s imports %s: the pure core must not do I/O", f, p)
					}
				}
			}
			ast.Inspect(af, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if x, ok := sel.X.(*ast.Ident); ok && x.Name == "time" && forbiddenCalls[sel.Sel.Name] {
					t.Errorf("%s: time.%s: the pure core takes time as an argument", fset.Position(sel.Pos()), sel.Sel.Name)
				}
				return true
			})
		}
	}
}
