package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
)

// incidentQuarantine lists the messages kept in quarantine or, given one's
// number, writes it as received (docs/threat-model.md A6, G2): the message
// an alert "[quarantine] poison" or "quarantined" names.
func incidentQuarantine(tx *bolt.Tx, args []string, w io.Writer) error {
	recs, err := incidentdb.Quarantined(tx)
	if err != nil {
		return err
	}
	switch len(args) {
	case 0:
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "MESSAGE\tRECEIVED (UTC)\tSIZE\tNOTE\tENVELOPE FROM\tSHA-256")
		for _, r := range recs {
			from := r.EnvelopeFrom
			if from == "" {
				from = "<>"
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\n", r.Seq, r.Received.UTC().Format(time.DateTime), r.Size, r.Note, from, r.SHA256)
		}
		return tw.Flush()
	case 1:
		seq, err := strconv.ParseUint(args[0], 10, 64)
		if err != nil {
			return usageError(fmt.Sprintf("%q is not a message number; `embargo incident quarantine` lists them", args[0]))
		}
		for _, r := range recs {
			if r.Seq == seq {
				raw, err := incidentdb.Raw(tx, seq)
				if err != nil {
					return err
				}
				_, err = w.Write(raw)
				return err
			}
		}
		return fmt.Errorf("message %d is not in quarantine; `embargo incident quarantine` lists those that are", seq)
	}
	return usageError("usage: embargo incident quarantine [MESSAGE]")
}
