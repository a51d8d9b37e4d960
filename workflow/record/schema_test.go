package record

import (
	"testing"

	"github.com/embargo-project/embargo/workflow/record/recordtest"
)

// schemaCheck is one compiled schema (testdata/schema/README.md says where
// the files come from), checked by recordtest: the daemon's end-to-end test
// validates what it serves with the same code.
type schemaCheck func([]byte) error

func schemas(t *testing.T) (cve, osv schemaCheck) {
	t.Helper()
	s := recordtest.Load(t)
	return s.CVE, s.OSV
}

// validate checks a record against a schema; the error lists every failed
// keyword and where.
func validate(sch schemaCheck, record []byte) error { return sch(record) }
