package workflow

import (
	"reflect"
	"testing"
)

// TestAdvisoryFieldsComplete: every field of Advisory is listed once, with
// its value, so `embargo incident show` misses none.
func TestAdvisoryFieldsComplete(t *testing.T) {
	var a Advisory
	v := reflect.ValueOf(&a).Elem()
	for i := range v.NumField() {
		v.Field(i).SetString(v.Type().Field(i).Name)
	}
	got := AdvisoryFields(a)
	if len(got) != v.NumField() {
		t.Fatalf("%d fields listed, Advisory has %d", len(got), v.NumField())
	}
	seen := map[string]bool{}
	for _, f := range got {
		if f.Value == "" || seen[f.Value] {
			t.Errorf("field %s: value %q missing or listed twice", f.Name, f.Value)
		}
		seen[f.Value] = true
		if _, ok := lookupField(f.Name); !ok {
			t.Errorf("%s is no /set field name", f.Name)
		}
	}
}
