package config

import (
	"fmt"
	"net/netip"
	"time"
)

// Date is a day, "2026-12-25" in the file, held as its UTC midnight. It is
// parsed once, where it is decoded: a bad date is an error naming its line.
type Date struct{ time.Time }

// ParseDate reads a date like "2026-12-25".
func ParseDate(s string) (Date, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return Date{}, fmt.Errorf("%q is not a date like \"2026-12-25\"", s)
	}
	return Date{t.UTC()}, nil
}

// UnmarshalText implements encoding.TextUnmarshaler for go-toml.
func (d *Date) UnmarshalText(b []byte) error {
	v, err := ParseDate(string(b))
	if err == nil {
		*d = v
	}
	return err
}

// String is the date as written in the file; "" for the zero Date.
func (d Date) String() string {
	if d.IsZero() {
		return ""
	}
	return d.Format(time.DateOnly)
}

// Network is a client network, written as a CIDR prefix ("10.0.0.0/8") or a
// single address.
type Network struct{ netip.Prefix }

// UnmarshalText implements encoding.TextUnmarshaler for go-toml.
func (n *Network) UnmarshalText(b []byte) error {
	s := string(b)
	if p, err := netip.ParsePrefix(s); err == nil {
		n.Prefix = p.Masked()
		return nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return fmt.Errorf("%q is neither a network like \"10.0.0.0/8\" nor an address", s)
	}
	n.Prefix = netip.PrefixFrom(a, a.BitLen())
	return nil
}

// Prefixes returns the networks as prefixes; nil for none.
func Prefixes(ns []Network) []netip.Prefix {
	if len(ns) == 0 {
		return nil
	}
	out := make([]netip.Prefix, len(ns))
	for i, n := range ns {
		out[i] = n.Prefix
	}
	return out
}
