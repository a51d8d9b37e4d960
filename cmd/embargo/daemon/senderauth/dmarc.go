package senderauth

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// dmarcResult is DMARC's verdict for a From domain (RFC 7489 §6.6) and how
// the domain was authenticated: "" when it was not.
type dmarcResult struct {
	value authres.ResultValue // "" when not evaluated
	how   string
}

// evaluateDMARC finds the From domain's DMARC policy (RFC 7489 §6.6.3) and
// checks whether a passing DKIM signature's d= or the SPF-passed domain is
// aligned with it (RFC 7489 §3.1), in the policy's modes (adkim, aspf),
// relaxed without a policy.
//
// The verdict is a DMARC pass when the domain has a policy, and without one
// an aligned DKIM or SPF pass, as a trusted MTA's Authentication-Results
// are read (listd's authenticatedFrom). A policy that cannot be fetched in
// time (temperror) or read (permerror) authenticates nothing: we cannot
// know whether it asks for strict alignment.
func evaluateDMARC(ctx context.Context, b *budget, from string, dkimPass []string, spfDomain string, spfPass bool) dmarcResult {
	rec, value := lookupPolicy(ctx, b, from)
	if value == authres.ResultTempError || value == authres.ResultPermError {
		return dmarcResult{value: value}
	}
	adkim, aspf := dmarc.AlignmentMode(dmarc.AlignmentRelaxed), dmarc.AlignmentMode(dmarc.AlignmentRelaxed)
	if rec != nil {
		adkim, aspf = rec.DKIMAlignment, rec.SPFAlignment
	}
	how := ""
	for _, d := range dkimPass {
		if aligned(d, from, adkim) {
			how = "DKIM pass, d=" + d
			break
		}
	}
	if how == "" && spfPass && aligned(spfDomain, from, aspf) {
		how = "SPF pass for " + spfDomain
	}
	switch {
	case rec == nil:
		return dmarcResult{value: authres.ResultNone, how: how}
	case how == "":
		return dmarcResult{value: authres.ResultFail}
	}
	return dmarcResult{value: authres.ResultPass, how: "DMARC pass for " + from}
}

// lookupPolicy is RFC 7489 §6.6.3: the policy at _dmarc.<From domain>, else
// at _dmarc.<organizational domain>. Exactly one "v=DMARC1" record counts;
// none or several is no policy (ResultNone). A failed lookup is a
// temperror, a record that cannot be read a permerror; a policy found
// comes with "".
func lookupPolicy(ctx context.Context, b *budget, from string) (*dmarc.Record, authres.ResultValue) {
	names := []string{from}
	if org := orgDomain(from); org != from {
		names = append(names, org)
	}
	for _, name := range names {
		txts, err := b.LookupTXT(ctx, "_dmarc."+name)
		var de *net.DNSError
		switch {
		case errors.As(err, &de) && de.IsNotFound:
			continue
		case err != nil:
			return nil, authres.ResultTempError
		}
		var found []string
		for _, t := range txts {
			if v, _, _ := strings.Cut(t, ";"); strings.EqualFold(strings.TrimSpace(v), "v=DMARC1") {
				found = append(found, t)
			}
		}
		if len(found) != 1 {
			continue
		}
		rec, err := dmarc.Parse(found[0])
		if err != nil {
			return nil, authres.ResultPermError
		}
		if rec.DKIMAlignment == "" {
			rec.DKIMAlignment = dmarc.AlignmentRelaxed
		}
		if rec.SPFAlignment == "" {
			rec.SPFAlignment = dmarc.AlignmentRelaxed
		}
		return rec, ""
	}
	return nil, authres.ResultNone
}

// aligned is RFC 7489 §3.1: in strict mode the same domain, in relaxed
// mode the same organizational domain.
func aligned(d, from string, mode dmarc.AlignmentMode) bool {
	d, from = norm(d), norm(from)
	if d == "" || from == "" {
		return false
	}
	if d == from {
		return true
	}
	return mode != dmarc.AlignmentStrict && orgDomain(d) == orgDomain(from)
}

// orgDomain is RFC 7489 §3.2: the public suffix of d and one label more,
// from the Public Suffix List compiled into golang.org/x/net/publicsuffix
// (both its ICANN and private sections: two tenants of one hosting suffix
// are two organizations). A name that is itself a public suffix is its
// own.
func orgDomain(d string) string {
	d = norm(d)
	org, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return org
}

func norm(d string) string { return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), ".")) }
