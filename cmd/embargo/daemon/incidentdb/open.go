package incidentdb

import (
	"bytes"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/workflow"
)

// closedPhase is how a closed incident's record starts: json.Marshal writes
// the fields in declaration order, so after "v" (a number) and "id" (an ID:
// no quotes) comes the phase. Its first occurrence is the top-level field;
// inside any later string value a quote would be escaped.
var phaseField = []byte(`,"phase":"`)

// OpenIncidents returns the incidents that are not closed, oldest first,
// without decoding the closed ones: the tick sweeps this once a minute
// (daemon/listd Service.Tick), and closed incidents pile up. A record whose
// phase cannot be found where expected is decoded: when in doubt, read.
func OpenIncidents(tx *bolt.Tx) ([]workflow.Incident, error) {
	var out []workflow.Incident
	err := tx.Bucket(bucketIncidents).ForEach(func(k, v []byte) error {
		if i := bytes.Index(v, phaseField); i >= 0 && i < 64 && bytes.HasPrefix(v[i+len(phaseField):], []byte(`closed"`)) {
			return nil
		}
		var inc workflow.Incident
		if err := json.Unmarshal(v, &inc); err != nil {
			return fmt.Errorf("incidentdb: decode %s: %w", k, err)
		}
		if inc.Phase != workflow.PhaseClosed {
			out = append(out, inc)
		}
		return nil
	})
	sortIncidents(out)
	return out, err
}
