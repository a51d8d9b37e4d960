package daemon

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/config"
)

// Check is `embargo check` beyond the file itself: it loads the members'
// keys, the TLS certificate and the DKIM key as the daemon would at start,
// creating nothing, and lists the DNS records to publish. An error means the
// check could not run (an unreadable passphrase file, keys_dir missing);
// what it finds wrong is in the report.
func Check(cfg *config.Config, now time.Time) (*config.Report, error) {
	r := cfg.Report()
	ks, err := LoadKeys(cfg, now, false)
	if err != nil {
		return nil, err
	}
	r.Keys = ks.ProblemLines()
	for _, p := range ks.Problems {
		if !p.Warning {
			r.KeyErrors++
		}
	}
	if cfg.SMTP.TLSCert != "" {
		c, err := loadCertificate(cfg.SMTP.TLSCert, cfg.SMTP.TLSKey)
		if err != nil {
			r.Errors = append(r.Errors, err)
		} else {
			r.TLS = fmt.Sprintf("STARTTLS with %s, valid until %s", c.Leaf.Subject.CommonName, c.Leaf.NotAfter.UTC().Format(time.DateOnly))
			if m := certWarning(c, now); m != "" {
				r.Warnings = append(r.Warnings, m)
			}
		}
	}
	if path := cfg.DKIMKeyPath(); path != "" {
		// A missing default key is generated at the first start; the DNS
		// notes say so.
		if _, err := readDKIMKey(path); err != nil && (!errors.Is(err, os.ErrNotExist) || cfg.DKIM.KeyFile != "") {
			r.Errors = append(r.Errors, err)
		}
	}
	r.DNS = cfg.DNSRecords(dkimDNS(cfg))
	return r, nil
}
