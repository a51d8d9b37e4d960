// Package recordtest validates CVE and OSV records against the official
// schemas kept in workflow/record/testdata/schema (their README says where
// they come from), for the tests of the record builders and of the daemon
// that publishes the records. Only tests import it: the daemon never carries
// the schema validator.
package recordtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Schemas are the compiled CVE Record Format 5.1.1 and OSV schemas.
type Schemas struct {
	cve, osv *jsonschema.Schema
}

// The files, compiled once per test binary with format assertions on: "uri"
// and the date formats count, as they do for the CVE and OSV services.
var (
	once       sync.Once
	compiled   *Schemas
	compileErr error
)

// Load compiles the schemas (once) and fails the test if they do not load.
func Load(t testing.TB) *Schemas {
	t.Helper()
	once.Do(func() { compiled, compileErr = compile() })
	if compileErr != nil {
		t.Fatal(compileErr)
	}
	return compiled
}

// Dir is the directory holding the schema files, found from this source
// file: the tests of any package can reach it.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", "schema")
}

func compile() (*Schemas, error) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	for url, file := range map[string]string{
		"https://embargo.invalid/cve.json": "CVE_Record_Format_bundled-5.1.1.json",
		"https://embargo.invalid/osv.json": "osv-schema.json",
	} {
		f, err := os.Open(filepath.Join(Dir(), file))
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if err := c.AddResource(url, doc); err != nil {
			return nil, err
		}
	}
	var s Schemas
	var err error
	if s.cve, err = c.Compile("https://embargo.invalid/cve.json"); err != nil {
		return nil, err
	}
	if s.osv, err = c.Compile("https://embargo.invalid/osv.json"); err != nil {
		return nil, err
	}
	return &s, nil
}

// CVE checks a CVE JSON 5 record; the error lists every failed keyword and
// where.
func (s *Schemas) CVE(record []byte) error { return validate(s.cve, record) }

// OSV checks an OSV record the same way.
func (s *Schemas) OSV(record []byte) error { return validate(s.osv, record) }

func validate(sch *jsonschema.Schema, record []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(record))
	if err != nil {
		return err
	}
	err = sch.Validate(inst)
	var ve *jsonschema.ValidationError
	if errors.As(err, &ve) {
		return fmt.Errorf("%#v", ve)
	}
	return err
}
