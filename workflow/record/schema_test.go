package record

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The official schemas (testdata/schema/README.md says where they come
// from), compiled once with format assertions on: "uri" and the date formats
// count, as they do for the CVE and OSV services.
var (
	schemaOnce         sync.Once
	cveSchema, osvSch  *jsonschema.Schema
	schemaCompileError error
)

func schemas(t *testing.T) (cve, osv *jsonschema.Schema) {
	t.Helper()
	schemaOnce.Do(func() {
		c := jsonschema.NewCompiler()
		c.AssertFormat()
		for url, file := range map[string]string{
			"https://embargo.invalid/cve.json": "CVE_Record_Format_bundled-5.1.1.json",
			"https://embargo.invalid/osv.json": "osv-schema.json",
		} {
			f, err := os.Open(filepath.Join("testdata", "schema", file))
			if err != nil {
				schemaCompileError = err
				return
			}
			doc, err := jsonschema.UnmarshalJSON(f)
			f.Close()
			if err != nil {
				schemaCompileError = fmt.Errorf("%s: %w", file, err)
				return
			}
			if err := c.AddResource(url, doc); err != nil {
				schemaCompileError = err
				return
			}
		}
		if cveSchema, schemaCompileError = c.Compile("https://embargo.invalid/cve.json"); schemaCompileError != nil {
			return
		}
		osvSch, schemaCompileError = c.Compile("https://embargo.invalid/osv.json")
	})
	if schemaCompileError != nil {
		t.Fatal(schemaCompileError)
	}
	return cveSchema, osvSch
}

// validate checks a record against a schema; the error lists every failed
// keyword and where.
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
