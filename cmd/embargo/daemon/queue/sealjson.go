package queue

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// encodeRecord is json.Marshal without HTML escaping: a header's "<" and
// ">" stay one byte each instead of six.
func encodeRecord(rec *record) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(rec); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// sealJSON is a Seal as a row record stores it. Its header blocks are rendered header
// fields, 7-bit or UTF-8 text, so they are stored as JSON text
// ("outer_text", "inner_text"): a third smaller than the base64 encoding/json
// gives a []byte, and no base64 to code each time the row is read. A block
// that is not valid UTF-8 (which JSON text cannot hold) keeps the base64
// form, as do the rows of schema version 2 ("outer", "inner").
type sealJSON struct {
	Signer    string `json:"signer"`
	To        string `json:"to,omitempty"`
	Reporter  bool   `json:"reporter,omitempty"`
	SignOnly  bool   `json:"sign_only,omitempty"`
	Key       []byte `json:"key,omitempty"`
	OuterText string `json:"outer_text,omitempty"`
	InnerText string `json:"inner_text,omitempty"`
	Outer     []byte `json:"outer,omitempty"`
	Inner     []byte `json:"inner,omitempty"`
	// Compose is stored as the JSON value it is, not as a string: no
	// quoting, nothing to unquote when the row is read.
	Compose json.RawMessage `json:"compose,omitempty"`
}

// storedSeal is s as a record holds it; nil for nil.
func storedSeal(s *Seal) *sealJSON {
	if s == nil {
		return nil
	}
	j := &sealJSON{Signer: s.Signer, To: s.To, Reporter: s.Reporter, SignOnly: s.SignOnly, Key: s.Key, Compose: s.Compose}
	j.OuterText, j.Outer = textOrBytes(s.Outer)
	j.InnerText, j.Inner = textOrBytes(s.Inner)
	return j
}

// seal is the stored spec as a Seal; nil for nil.
func (j *sealJSON) seal() *Seal {
	if j == nil {
		return nil
	}
	s := &Seal{Signer: j.Signer, To: j.To, Reporter: j.Reporter, SignOnly: j.SignOnly, Key: j.Key, Outer: j.Outer, Inner: j.Inner, Compose: j.Compose}
	if j.OuterText != "" {
		s.Outer = []byte(j.OuterText)
	}
	if j.InnerText != "" {
		s.Inner = []byte(j.InnerText)
	}
	return s
}

func textOrBytes(b []byte) (string, []byte) {
	if utf8.Valid(b) {
		return string(b), nil
	}
	return "", b
}
