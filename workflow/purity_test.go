package workflow

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestPurity keeps workflow, lists and lists/governance free of I/O and of the wall clock
// (docs/style.md §3 rule 1, §5 example 1): they take time as an argument and
// return decisions, so every rule can be tested on a fake clock.
func TestPurity(t *testing.T) {
	forbiddenImports := []string{"net", "net/http", "net/smtp", "os", "os/exec", "go.etcd.io/bbolt", "github.com/emersion/go-smtp", "github.com/ProtonMail/go-crypto"}
	forbiddenCalls := map[string]bool{"Now": true, "Sleep": true, "After": true, "NewTimer": true, "NewTicker": true, "Tick": true, "AfterFunc": true}
	for _, dir := range []string{".", "../lists", "../lists/governance"} {
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
