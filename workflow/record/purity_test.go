package record

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestPurity keeps the builders pure, like workflow: no I/O, no wall clock.
// The schema files are read by the tests only.
func TestPurity(t *testing.T) {
	files, _ := filepath.Glob("*.go")
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
			if p == "os" || p == "io/fs" || p == "net" || strings.HasPrefix(p, "net/") || p == "os/exec" || strings.Contains(p, "jsonschema") {
				t.Errorf("%s imports %s: the record builders must not do I/O (or need the schema validator)", f, p)
			}
		}
		ast.Inspect(af, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if x, ok := sel.X.(*ast.Ident); ok && x.Name == "time" && (sel.Sel.Name == "Now" || sel.Sel.Name == "Since") {
					t.Errorf("%s: time.%s: the builders take every instant from the incident", fset.Position(sel.Pos()), sel.Sel.Name)
				}
			}
			return true
		})
	}
}
