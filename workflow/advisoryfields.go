package workflow

// FieldValue is one advisory field by its /set name, and its value ("" when
// unset).
type FieldValue struct {
	Name, Value string
}

// AdvisoryFields lists every advisory field, set or not, in the order of
// /set's help: what `embargo incident show` prints, from the same table the
// commands use, so a new field shows up there without a second list.
func AdvisoryFields(a Advisory) []FieldValue {
	fs := fields()
	out := make([]FieldValue, len(fs))
	for i, f := range fs {
		out[i] = FieldValue{Name: f.name, Value: *f.ptr(&a)}
	}
	return out
}
