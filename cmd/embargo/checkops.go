package main

import (
	"errors"
	"fmt"
	"github.com/embargo-project/embargo/cmd/embargo/config"
	"io"
	"os"
	"time"
)

// checkOps is embargo check's part for the listeners and outbound signing: it
// loads the TLS certificate and the DKIM key as the daemon would, without
// creating anything, and prints warnings for what is valid but risky.
func checkOps(cfg *config.Config, w io.Writer) error {
	var errs []error
	if cfg.SMTP.TLSCert != "" {
		c, err := loadCertificate(cfg.SMTP.TLSCert, cfg.SMTP.TLSKey)
		if err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(w, "tls: STARTTLS with %s, valid until %s\n", c.Leaf.Subject.CommonName, c.Leaf.NotAfter.UTC().Format(time.DateOnly))
			if m := certWarning(c, time.Now()); m != "" {
				fmt.Fprintf(w, "warning: %s\n", m)
			}
		}
	}
	if path := cfg.DKIMKeyPath(); path != "" {
		_, err := readDKIMKey(path)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrNotExist) && cfg.DKIM.KeyFile == "":
			// Generated at the first start; printDNS says so.
		default:
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
