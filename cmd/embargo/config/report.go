package config

import (
	"fmt"
	"net"
)

// Report is what `embargo check` finds, as data: the command line prints it.
// Report fills what the configuration alone says; the daemon package adds
// what loading its keys and certificate says (daemon.Check).
type Report struct {
	Source  string
	Domain  string
	Members int
	Lists   []string // the list addresses, in ListNames order

	// Warnings are valid but probably not what the operator wants.
	Warnings []string
	// Records says which release records (the CVE draft, the OSV record)
	// the configuration leaves incomplete or invalid, and why.
	Records []string
	// Keys describes the members' key problems, one line each; KeyErrors
	// counts those that are errors rather than warnings.
	Keys      []string
	KeyErrors int
	// TLS describes the certificate STARTTLS offers; "" without one.
	TLS string
	// Errors make the configuration unusable as it is: a certificate or a
	// key that does not load.
	Errors []error
	// DNS are the records to publish for the domain.
	DNS []DNSRecord
}

// OK reports whether nothing in r stops the daemon from starting.
func (r *Report) OK() bool { return r.KeyErrors == 0 && len(r.Errors) == 0 }

// DNSRecord is one record to publish, with the notes that explain it.
type DNSRecord struct {
	Notes []string // comment lines
	// Name, Type and Value are the record in zone-file syntax; an empty Name
	// means there is nothing to publish yet, and the notes say why.
	Name, Type, Value string
}

// Report checks what the configuration alone can tell: the warnings.
func (c *Config) Report() *Report {
	r := &Report{Source: c.Source, Domain: c.Domain, Members: len(c.Members), Records: c.RecordGaps()}
	for _, n := range ListNames() {
		r.Lists = append(r.Lists, c.Lists[n].Address)
	}
	src := 0
	for _, m := range c.Members {
		if m.Has("src") {
			src++
		}
		if m.Fingerprint == "" {
			r.Warnings = append(r.Warnings, fmt.Sprintf("member %s has no fingerprint: no signed commands from them will count, and their copies are not encrypted", m.Email))
		}
	}
	if src == 0 {
		r.Warnings = append(r.Warnings, "no member has the role \"src\": reports will be stored but reach nobody")
	}
	if host, _, _ := net.SplitHostPort(c.SMTP.Listen); c.SMTP.TLSCert == "" && !IsLoopbackHost(host) {
		r.Warnings = append(r.Warnings, fmt.Sprintf("smtp.listen %s takes mail from other hosts without STARTTLS: set smtp.tls_cert and smtp.tls_key", c.SMTP.Listen))
	}
	switch free := c.SMTP.MinFree(); {
	case free == 0:
		r.Warnings = append(r.Warnings, "smtp.min_free_bytes = 0: no free-space check at MAIL; on a full disk clients send whole messages that fail with 451")
	case free > 0 && free < c.SMTP.MaxMessageBytes/2*3:
		r.Warnings = append(r.Warnings, fmt.Sprintf("smtp.min_free_bytes %d is less than 1.5 × smtp.max_message_bytes (%d): a message without SIZE= may fill the disk (Postfix asks the same of queue_minfree)", free, c.SMTP.MaxMessageBytes/2*3))
	}
	if c.SMTP.MinDataRate() == 0 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("smtp.min_data_rate = 0: no minimum data rate; a client trickling a message holds a connection for up to read_timeout_minutes (%d)", c.SMTP.ReadTimeoutMinutes))
	}
	if network, addr := c.LMTP.Addr(); c.LMTP.Listen != "" && network == "tcp" {
		if h, _, err := net.SplitHostPort(addr); err == nil && !IsLoopbackHost(h) {
			r.Warnings = append(r.Warnings, fmt.Sprintf("lmtp.listen %q is not a loopback address: LMTP is meant for the MTA on this host, and it has no per-IP connection limit", c.LMTP.Listen))
		}
	}
	return r
}

// DNSRecords are the records the operator publishes so that mail for the
// lists arrives and mail from them passes SPF, DKIM and DMARC at receivers.
// dkim is the DKIM record, which needs the key (the daemon package reads it).
func (c *Config) DNSRecords(dkim DNSRecord) []DNSRecord {
	d := c.Domain + "."
	mx := DNSRecord{Notes: []string{"MX: the host that receives mail for the list addresses (Postfix in front of embargo, or embargo on port 25)."}}
	host := c.Relay.Helo
	if host == "" {
		host = "mail." + c.Domain
		mx.Notes = append(mx.Notes, host+" is a placeholder: set relay.helo to this host's public name to print it here.")
	}
	mx.Name, mx.Type, mx.Value = d, "MX", "10 "+host+"."
	spf := DNSRecord{Notes: []string{"SPF (RFC 7208): the hosts that send for the domain. One SPF record per name: if one exists, add \"mx\" to it."},
		Name: d, Type: "TXT", Value: `"v=spf1 mx -all"`}
	if h := c.RelayHost(); c.Relay.URL != "" && h != "" && !IsLoopbackHost(h) {
		spf.Notes = append(spf.Notes, "Mail leaves through "+h+": add that provider's mechanism too (often include:…).")
	}
	dkim.Notes = append([]string{"DKIM (RFC 6376): the public key embargo signs outbound mail with."}, dkim.Notes...)
	dmarc := DNSRecord{Notes: []string{
		"DMARC (RFC 7489): receivers reject mail that claims the domain without an aligned SPF or DKIM pass.",
		"Only if everything else that sends as @" + c.Domain + " passes too; otherwise start with p=none and a rua= address.",
	}, Name: "_dmarc." + d, Type: "TXT", Value: `"v=DMARC1; p=reject; adkim=s; aspf=r"`}
	return []DNSRecord{mx, spf, dkim, dmarc}
}
