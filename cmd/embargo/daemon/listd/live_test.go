package listd

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestEntryPointsTakeOneSnapshot: every exported method of Service that
// reads the roster, the keys or the settings works on one snapshot
// (Service.current), so that a reload or a roster change by mail never
// hands one message two rosters. A new entry point that forgets it reads
// the Options New got, not the roster in force, and fails here.
func TestEntryPointsTakeOneSnapshot(t *testing.T) {
	exempt := map[string]string{
		"SetTestHooks": "sets failpoints, reads nothing",
		"Reload":       "builds the snapshot",
		"Write":        "runs the caller's transaction in the group commit, reads no setting",
	}
	files, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	seen := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range af.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Recv == nil || !fd.Name.IsExported() || fd.Body == nil {
				continue
			}
			star, ok := fd.Recv.List[0].Type.(*ast.StarExpr)
			if !ok {
				continue // a value receiver: not a *Service
			}
			if id, isID := star.X.(*ast.Ident); !isID || id.Name != "Service" {
				continue
			}
			seen++
			if _, ok := exempt[fd.Name.Name]; ok {
				continue
			}
			calls := false
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				if c, ok := n.(*ast.CallExpr); ok {
					if sel, ok := c.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "current" {
						calls = true
					}
				}
				return !calls
			})
			if !calls {
				t.Errorf("%s: (*Service).%s does not take a snapshot: begin it with s = s.current()", fset.Position(fd.Pos()), fd.Name.Name)
			}
		}
	}
	if seen < 8 {
		t.Errorf("found %d exported methods of Service; the test reads the wrong files", seen)
	}
}
