package governance

// Action is something a governance call asks the daemon to do, in order.
// The State the call returns already holds every roster change; the roster
// actions say what changed so the daemon can log it and rebuild its roster
// (Members) and keyring (PinnedKeys) before it sends the mail that follows.
type Action interface {
	Kind() string
	action()
}

// PinKey pins a new key for Email (an admission, /member add, /member key):
// Armored is the public key, Fingerprint its primary fingerprint.
type PinKey struct {
	Email, Fingerprint, Armored string
	Previous                    string // the fingerprint it replaces, "" for a new member
}

// AddMember adds Email with Roles (or, when already a member, gives it
// these roles).
type AddMember struct {
	Email string
	Roles []string
}

// RemoveMember removes Email from the roster.
type RemoveMember struct{ Email string }

// Mail sends a rendered template. Fields are the template's data; the daemon
// adds Project, ListAddress (distributors@), ListKey (the distributors list
// key's fingerprint), ApplyAddress (distributors+apply@) and SecurityAddress
// (security@). Subject is fixed text (never applicant input); the daemon
// prefixes "[Thread] " and, with a Thread, sets Reply-To
// security+Thread@ and threads the copies under the proposal's RootMsg.
//
// Recipients: To (one address), or with ToSRC every SRC member, each copy
// encrypted to that member's pinned key; CCSRC adds those copies to a mail
// To someone. To's copy is encrypted to Key (armored) when set, else to the
// pinned key Fingerprint when the daemon has it, else signed only.
//
// Templates and fields:
//
//	distributor-application          id applicant alias product fingerprint algorithm expires userids
//	                                 warnings signed voucher voucher_status deadline quorum lazy_days
//	                                 maintained users record not_a_rebuild community embargo contributes
//	distributor-application-ack      id alias product fingerprint deadline lazy_days
//	distributor-application-refused  reasons
//	distributor-welcome              id member product fingerprint
//	distributor-removal              id kind (removed, left, denied, expired) member product reason person
//	roster-change                    id change member roles fingerprint previous approvers how reason at
//	two-person-pending               id command by signed needed quorum awaited expires how
type Mail struct {
	Template    string
	Subject     string
	Thread      string
	To          string
	ToSRC       bool
	CCSRC       bool
	Key         string
	Fingerprint string
	Fields      map[string]string
}

// Reply answers the signer (/member list, /status, /help), like the receipt.
type Reply struct {
	What string // member-list, status, help
	Text string
}

func (PinKey) Kind() string       { return "pin-key" }
func (AddMember) Kind() string    { return "add-member" }
func (RemoveMember) Kind() string { return "remove-member" }
func (m Mail) Kind() string       { return "mail:" + m.Template }
func (r Reply) Kind() string      { return "reply:" + r.What }

func (PinKey) action()       {}
func (AddMember) action()    {}
func (RemoveMember) action() {}
func (Mail) action()         {}
func (Reply) action()        {}
