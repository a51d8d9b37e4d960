package record

// cweNames are the names of the weaknesses advisories name most often (the
// 2024 CWE Top 25 and a few more), for the CVE problemTypes description. Any
// other CWE ID is described by its ID alone, which the schema accepts.
var cweNames = map[string]string{
	"CWE-20":  "Improper Input Validation",
	"CWE-22":  "Improper Limitation of a Pathname to a Restricted Directory ('Path Traversal')",
	"CWE-59":  "Improper Link Resolution Before File Access ('Link Following')",
	"CWE-77":  "Improper Neutralization of Special Elements used in a Command ('Command Injection')",
	"CWE-78":  "Improper Neutralization of Special Elements used in an OS Command ('OS Command Injection')",
	"CWE-79":  "Improper Neutralization of Input During Web Page Generation ('Cross-site Scripting')",
	"CWE-89":  "Improper Neutralization of Special Elements used in an SQL Command ('SQL Injection')",
	"CWE-94":  "Improper Control of Generation of Code ('Code Injection')",
	"CWE-119": "Improper Restriction of Operations within the Bounds of a Memory Buffer",
	"CWE-122": "Heap-based Buffer Overflow",
	"CWE-125": "Out-of-bounds Read",
	"CWE-190": "Integer Overflow or Wraparound",
	"CWE-200": "Exposure of Sensitive Information to an Unauthorized Actor",
	"CWE-269": "Improper Privilege Management",
	"CWE-284": "Improper Access Control",
	"CWE-287": "Improper Authentication",
	"CWE-295": "Improper Certificate Validation",
	"CWE-306": "Missing Authentication for Critical Function",
	"CWE-352": "Cross-Site Request Forgery (CSRF)",
	"CWE-362": "Concurrent Execution using Shared Resource with Improper Synchronization ('Race Condition')",
	"CWE-400": "Uncontrolled Resource Consumption",
	"CWE-416": "Use After Free",
	"CWE-434": "Unrestricted Upload of File with Dangerous Type",
	"CWE-476": "NULL Pointer Dereference",
	"CWE-502": "Deserialization of Untrusted Data",
	"CWE-532": "Insertion of Sensitive Information into Log File",
	"CWE-601": "URL Redirection to Untrusted Site ('Open Redirect')",
	"CWE-611": "Improper Restriction of XML External Entity Reference",
	"CWE-770": "Allocation of Resources Without Limits or Throttling",
	"CWE-787": "Out-of-bounds Write",
	"CWE-798": "Use of Hard-coded Credentials",
	"CWE-862": "Missing Authorization",
	"CWE-863": "Incorrect Authorization",
	"CWE-918": "Server-Side Request Forgery (SSRF)",
}

// cweDescription is "CWE-79 Improper Neutralization …", or the ID alone.
func cweDescription(id string) string {
	if n, ok := cweNames[id]; ok {
		return id + " " + n
	}
	return id
}
