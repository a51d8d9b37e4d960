package queue

import (
	"encoding/json"
	"fmt"
	"time"
)

// recordJSON is a row as schema versions 1 to 4 stored it, as JSON;
// version 5 writes a binary record instead (rowcodec.go), and rows of the
// older versions are still read.
type recordJSON struct {
	V           int       `json:"v"`
	From        string    `json:"from"`
	To          []string  `json:"to"`
	MessageID   string    `json:"message_id,omitempty"`
	Kind        string    `json:"kind,omitempty"`
	Incident    string    `json:"incident,omitempty"`
	NoAlert     bool      `json:"no_alert,omitempty"`
	Size        int       `json:"size"`
	Body        uint64    `json:"body,omitempty"`
	BodySize    int       `json:"body_size,omitempty"`
	Seal        *sealJSON `json:"seal,omitempty"`
	State       State     `json:"state"`
	Created     time.Time `json:"created"`
	Requeued    time.Time `json:"requeued,omitzero"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	Attempts    int       `json:"attempts,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
}

// decodeJSON reads a row of schema version 1 to 4.
func decodeJSON(k, v []byte) (*record, error) {
	var j recordJSON
	if err := json.Unmarshal(v, &j); err != nil {
		return nil, fmt.Errorf("queue: decode row %x: %w", k, err)
	}
	if j.V < 1 || j.V > 4 {
		return nil, fmt.Errorf("queue: row %x has schema version %d in JSON, want 1 to 4", k, j.V)
	}
	return &record{
		V: j.V, From: j.From, To: j.To, MessageID: j.MessageID, Kind: j.Kind, Incident: j.Incident,
		NoAlert: j.NoAlert, Size: j.Size, Body: j.Body, BodySize: j.BodySize, Seal: j.Seal.seal(),
		State: j.State, Created: j.Created, Requeued: j.Requeued, NextAttempt: j.NextAttempt,
		LastAttempt: j.LastAttempt, Attempts: j.Attempts, LastError: j.LastError,
	}, nil
}

// sealJSON is a Seal as a JSON row record stored it. Version 3 kept its
// header blocks as JSON text ("outer_text", "inner_text"), or base64 for a
// block that was not UTF-8; version 2 as base64 ("outer", "inner");
// version 4 added the composed spec, a JSON value.
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
