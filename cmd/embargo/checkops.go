package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// checkOps is embargo check's part for the listeners and outbound signing: it
// loads the TLS certificate and the DKIM key as the daemon would, without
// creating anything, and prints warnings for what is valid but risky.
func checkOps(cfg *Config, w io.Writer) error {
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
	} else if host, _, _ := net.SplitHostPort(cfg.SMTP.Listen); !isLoopbackHost(host) {
		fmt.Fprintf(w, "warning: smtp.listen %s takes mail from other hosts without STARTTLS: set smtp.tls_cert and smtp.tls_key\n", cfg.SMTP.Listen)
	}
	for _, m := range lmtpWarnings(cfg) {
		fmt.Fprintf(w, "warning: %s\n", m)
	}
	if path := dkimKeyPath(cfg); path != "" {
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
