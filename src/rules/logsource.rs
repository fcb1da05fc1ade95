//! Sigma `logsource` → the events it means, as a condition on `EventID` and `Channel`.
//!
//! `category: process_creation` is Sysmon event 1 *or* Security event 4688; the other
//! categories are Sysmon events; a `service` is an event-log channel. A category, service
//! or product this table does not know is refused at load time: a rule whose log source
//! were silently ignored would run against every record.

use crate::fields::FieldCatalog;
use crate::normalize::FieldKind;
use crate::rules::error::{Refusal, refusal};
use crate::rules::expr::{Atom, Expr};
use crate::rules::pattern::{Matcher, Token};
use crate::yaml::{Node, Value};

/// The Sysmon channel.
pub const SYSMON: &str = "Microsoft-Windows-Sysmon/Operational";

/// (channel, event ids, `EventType` values or empty for any).
type Source = (&'static str, &'static [i64], &'static [&'static str]);

const CATEGORIES: &[(&str, &[Source])] = &[
    ("process_creation", &[(SYSMON, &[1], &[]), ("Security", &[4688], &[])]),
    ("file_change", &[(SYSMON, &[2], &[])]),
    ("network_connection", &[(SYSMON, &[3], &[])]),
    ("process_termination", &[(SYSMON, &[5], &[])]),
    ("driver_load", &[(SYSMON, &[6], &[])]),
    ("image_load", &[(SYSMON, &[7], &[])]),
    ("create_remote_thread", &[(SYSMON, &[8], &[])]),
    ("raw_access_thread", &[(SYSMON, &[9], &[])]),
    ("process_access", &[(SYSMON, &[10], &[])]),
    ("file_event", &[(SYSMON, &[11], &[])]),
    ("registry_add", &[(SYSMON, &[12], &["CreateKey"])]),
    ("registry_delete", &[(SYSMON, &[12], &["DeleteKey", "DeleteValue"])]),
    ("registry_set", &[(SYSMON, &[13], &[])]),
    ("registry_rename", &[(SYSMON, &[14], &[])]),
    ("registry_event", &[(SYSMON, &[12, 13, 14], &[])]),
    ("create_stream_hash", &[(SYSMON, &[15], &[])]),
    ("pipe_created", &[(SYSMON, &[17, 18], &[])]),
    ("wmi_event", &[(SYSMON, &[19, 20, 21], &[])]),
    ("dns_query", &[(SYSMON, &[22], &[])]),
    ("file_delete", &[(SYSMON, &[23, 26], &[])]),
    ("clipboard_capture", &[(SYSMON, &[24], &[])]),
    ("process_tampering", &[(SYSMON, &[25], &[])]),
    ("file_block_executable", &[(SYSMON, &[27], &[])]),
    ("file_block_shredding", &[(SYSMON, &[28], &[])]),
    ("file_executable_detected", &[(SYSMON, &[29], &[])]),
    ("file_delete_detected", &[(SYSMON, &[26], &[])]),
    ("sysmon_status", &[(SYSMON, &[4, 16], &[])]),
    ("sysmon_error", &[(SYSMON, &[255], &[])]),
    ("ps_module", &[(POWERSHELL, &[4103], &[]), (POWERSHELL_CORE, &[4103], &[])]),
    ("ps_script", &[(POWERSHELL, &[4104], &[]), (POWERSHELL_CORE, &[4104], &[])]),
    ("ps_classic_start", &[(POWERSHELL_CLASSIC, &[400], &[])]),
    ("ps_classic_provider_start", &[(POWERSHELL_CLASSIC, &[600], &[])]),
    ("ps_classic_script", &[(POWERSHELL_CLASSIC, &[800], &[])]),
];

const POWERSHELL: &str = "Microsoft-Windows-PowerShell/Operational";
const POWERSHELL_CORE: &str = "PowerShellCore/Operational";
const POWERSHELL_CLASSIC: &str = "Windows PowerShell";

/// Services and their channels (pySigma's `windows_logsource_mapping`; iis-configuration
/// and the last few from SigmaHQ's own logsource table).
const SERVICES: &[(&str, &[&str])] = &[
    ("iis-configuration", &["Microsoft-IIS-Configuration/Operational"]),
    ("sysmon", &[SYSMON]),
    ("security", &["Security"]),
    ("system", &["System"]),
    ("application", &["Application"]),
    ("powershell", &[POWERSHELL, POWERSHELL_CORE]),
    ("powershell-classic", &[POWERSHELL_CLASSIC]),
    ("dns-server-audit", &["Microsoft-Windows-DNS-Server/Audit"]),
    ("dns-server-analytic", &["Microsoft-Windows-DNS-Server/Analytical"]),
    (
        "security-mitigations",
        &["Microsoft-Windows-Security-Mitigations/Kernel Mode", "Microsoft-Windows-Security-Mitigations/User Mode"],
    ),
    ("bitlocker", &["Microsoft-Windows-BitLocker/BitLocker Management"]),
    ("appxpackaging-om", &["Microsoft-Windows-AppxPackaging/Operational"]),
    ("dns-client", &["Microsoft-Windows-DNS Client Events/Operational"]),
    ("appmodel-runtime", &["Microsoft-Windows-AppModel-Runtime/Admin"]),
    ("smbclient-connectivity", &["Microsoft-Windows-SmbClient/Connectivity"]),
    ("application-experience", &["Microsoft-Windows-Application-Experience/Program-Telemetry"]),
    ("ntfs", &["Microsoft-Windows-Ntfs/Operational"]),
    ("kernel-event-tracing", &["Microsoft-Windows-Kernel-EventTracing/Admin"]),
    ("sense", &["Microsoft-Windows-SENSE/Operational"]),
    ("taskscheduler", &["Microsoft-Windows-TaskScheduler/Operational"]),
    ("wmi", &["Microsoft-Windows-WMI-Activity/Operational"]),
    ("windefend", &["Microsoft-Windows-Windows Defender/Operational"]),
    ("bits-client", &["Microsoft-Windows-Bits-Client/Operational"]),
    ("codeintegrity-operational", &["Microsoft-Windows-CodeIntegrity/Operational"]),
    ("dns-server", &["DNS Server"]),
    ("driver-framework", &["Microsoft-Windows-DriverFrameworks-UserMode/Operational"]),
    ("firewall-as", &["Microsoft-Windows-Windows Firewall With Advanced Security/Firewall"]),
    ("msexchange-management", &["MSExchange Management"]),
    ("ntlm", &["Microsoft-Windows-NTLM/Operational"]),
    ("printservice-admin", &["Microsoft-Windows-PrintService/Admin"]),
    ("printservice-operational", &["Microsoft-Windows-PrintService/Operational"]),
    ("smbclient-security", &["Microsoft-Windows-SmbClient/Security"]),
    ("terminalservices-localsessionmanager", &["Microsoft-Windows-TerminalServices-LocalSessionManager/Operational"]),
    ("appxdeployment-server", &["Microsoft-Windows-AppXDeploymentServer/Operational"]),
    (
        "applocker",
        &[
            "Microsoft-Windows-AppLocker/MSI and Script",
            "Microsoft-Windows-AppLocker/EXE and DLL",
            "Microsoft-Windows-AppLocker/Packaged app-Deployment",
            "Microsoft-Windows-AppLocker/Packaged app-Execution",
        ],
    ),
    ("openssh", &["OpenSSH/Operational"]),
    ("shell-core", &["Microsoft-Windows-Shell-Core/Operational"]),
    ("diagnosis-scripted", &["Microsoft-Windows-Diagnosis-Scripted/Operational"]),
    ("ldap_debug", &["Microsoft-Windows-LDAP-Client/Debug"]),
    ("lsa-server", &["Microsoft-Windows-LSA/Operational"]),
    ("capi2", &["Microsoft-Windows-CAPI2/Operational"]),
    (
        "certificateservicesclient-lifecycle-system",
        &["Microsoft-Windows-CertificateServicesClient-Lifecycle-System/Operational"],
    ),
    ("dhcp", &["Microsoft-Windows-DHCP-Server/Operational"]),
    ("vhdmp", &["Microsoft-Windows-VHDMP/Operational"]),
    ("hyper-v-worker", &["Microsoft-Windows-Hyper-V-Worker"]),
    ("kernel-shimengine", &["Microsoft-Windows-Kernel-ShimEngine/Operational"]),
    ("microsoft-servicebus-client", &["Microsoft-ServiceBus-Client"]),
];

/// Why a log source was refused, and which key is at fault.
#[derive(Debug)]
pub struct LogsourceError {
    /// The offending key (`category`, `service`, `product`, or the block itself).
    pub key: &'static str,
    /// What is wrong.
    pub refusal: Refusal,
}

fn text_of<'a>(node: &'a Node, key: &'static str) -> Result<Option<&'a str>, LogsourceError> {
    match node.get(key) {
        None => Ok(None),
        Some(n) => match n.as_str() {
            Some(s) => Ok(Some(s)),
            None => {
                Err(LogsourceError { key, refusal: refusal!(Invalid, "`{key}` must be a string, not {}", n.kind()) })
            }
        },
    }
}

fn equals(catalog: &mut FieldCatalog, field: &str, value: &str) -> Expr {
    let id = catalog.intern(field);
    let m = Matcher::string(vec![Token::Lit(value.to_string())], FieldKind::Text, false);
    Expr::Atom(Atom::new(id, vec![m], false))
}

fn source_expr(catalog: &mut FieldCatalog, (channel, ids, types): &Source) -> Expr {
    let eid = catalog.intern("EventID");
    let mut parts = vec![
        Expr::Atom(Atom::new(eid, ids.iter().map(|&i| Matcher::Int(i)).collect(), false)),
        equals(catalog, "Channel", channel),
    ];
    if !types.is_empty() {
        let field = catalog.intern("EventType");
        let matchers =
            types.iter().map(|t| Matcher::string(vec![Token::Lit((*t).to_string())], FieldKind::Text, false)).collect();
        parts.push(Expr::Atom(Atom::new(field, matchers, false)));
    }
    Expr::and(parts)
}

/// The condition a `logsource` block adds to its rule.
pub fn compile(logsource: &Node, catalog: &mut FieldCatalog) -> Result<Expr, LogsourceError> {
    let Value::Map(entries) = &logsource.value else {
        return Err(LogsourceError { key: "logsource", refusal: refusal!(Invalid, "`logsource` must be a mapping") });
    };
    for (key, _) in entries {
        if !matches!(key.text.as_str(), "product" | "category" | "service" | "definition") {
            return Err(LogsourceError {
                key: "logsource",
                refusal: refusal!(
                    Invalid,
                    "unknown logsource key `{}` (expected product, category, service, definition)",
                    key.text
                ),
            });
        }
    }
    if let Some(product) = text_of(logsource, "product")? {
        if !product.eq_ignore_ascii_case("windows") {
            return Err(LogsourceError {
                key: "product",
                refusal: refusal!(
                    Unsupported,
                    "product `{product}` is not supported: iis-tagger reads Windows event logs"
                ),
            });
        }
    }
    let mut parts = Vec::new();
    if let Some(category) = text_of(logsource, "category")? {
        let Some((_, sources)) = CATEGORIES.iter().find(|(c, _)| c.eq_ignore_ascii_case(category)) else {
            return Err(LogsourceError {
                key: "category",
                refusal: refusal!(Unsupported, "unsupported logsource category `{category}`"),
            });
        };
        parts.push(Expr::or(sources.iter().map(|s| source_expr(catalog, s)).collect()));
    }
    if let Some(service) = text_of(logsource, "service")? {
        let Some((_, channels)) = SERVICES.iter().find(|(s, _)| s.eq_ignore_ascii_case(service)) else {
            return Err(LogsourceError {
                key: "service",
                refusal: refusal!(Unsupported, "unsupported logsource service `{service}`"),
            });
        };
        parts.push(Expr::or(channels.iter().map(|c| equals(catalog, "Channel", c)).collect()));
    }
    Ok(Expr::and(parts))
}
