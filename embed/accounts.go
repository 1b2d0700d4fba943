package embed

import (
	"fmt"
	"net"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nuid"
)

// The server's accounts. Coordination (ready announcements, assignments,
// answers, outcomes, session announcements) travels in coordAccount,
// which only the in-process users of this process log into, each with a
// password made at start; routes carry it between appliances. The streams
// live in recordsAccount, where only the appliance's own in-process user
// logs in, with every right. Client logins are in clientAccount, which
// imports what they may use: the records account's JetStream API,
// acknowledgements and flow control as services, the records' subjects
// and inboxes as streams, and the coordination services in
// ClientRights.Services. Why a third account: nats-server checks a
// client's publish permissions on the subject only, never on the reply
// subject, and answers a request in the account it was made in. A client
// in the records account could have any answer (a status reply,
// JetStream's own) published on a record subject, where the streams
// would store it; an answer to a service import goes back to the
// importing account instead. No client can publish into coordination or
// the records account. Every appliance of a cluster defines the same
// accounts (routes match them by name).
const (
	coordAccount   = "COORD"
	recordsAccount = "EDGEGATE"
	clientAccount  = "CLIENTS"

	coordUser    = "edgegate-coord"    // in-process, coordAccount
	internalUser = "edgegate-internal" // in-process, recordsAccount, every right
	readerUser   = "edgegate-reader"   // clients without credentials, where allowed

	// inProcess is nats-server's connection type of in-process clients
	// (jwt.ConnectionTypeInProcess): the in-process users are refused on
	// any listener, whatever password is tried.
	inProcess = "IN_PROCESS"
)

// ClientRights says what a client login may do in the records account.
type ClientRights struct {
	// Streams are the JetStream streams clients may read: stream info,
	// direct and stored-message reads, and consumers of their own
	// (create, info, next, acknowledge, delete). Never purge, delete,
	// change or publish.
	Streams []string
	// Subjects are what clients may subscribe to besides their inboxes
	// (_INBOX.>), e.g. the records' subjects.
	Subjects []string
	// Services are coordination subjects clients may send requests to
	// (e.g. edgegate.status): exported from the coordination account
	// with any number of replies each, nothing else of it.
	Services []string
}

// permissions are a client login's: reads of c's streams and subjects,
// requests to c's services.
func (c ClientRights) permissions() *server.Permissions {
	pub := []string{"$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST", "$JS.ACK.>", "$JS.FC.>"}
	for _, s := range c.Streams {
		pub = append(pub,
			"$JS.API.STREAM.INFO."+s,
			"$JS.API.STREAM.MSG.GET."+s,
			"$JS.API.DIRECT.GET."+s, "$JS.API.DIRECT.GET."+s+".>",
			"$JS.API.CONSUMER.CREATE."+s, "$JS.API.CONSUMER.CREATE."+s+".>",
			"$JS.API.CONSUMER.DURABLE.CREATE."+s+".*",
			"$JS.API.CONSUMER.INFO."+s+".*",
			"$JS.API.CONSUMER.DELETE."+s+".*",
			"$JS.API.CONSUMER.NAMES."+s,
			"$JS.API.CONSUMER.LIST."+s,
			"$JS.API.CONSUMER.MSG.NEXT."+s+".*",
		)
	}
	pub = append(pub, c.Services...)
	sub := append([]string{"_INBOX.>"}, c.Subjects...)
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
	}
}

// LoopbackAddr reports whether a host:port listens on loopback only
// ("localhost", 127.0.0.0/8, ::1); an empty or wildcard host does not.
func LoopbackAddr(addr string) bool {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// accounts sets up opts' accounts and users (see coordAccount) and
// returns the passwords of the in-process users of the records and the
// coordination account.
func accounts(opts *server.Options, cfg Config) (internal, coordPass string, err error) {
	if cfg.Auth.User == internalUser || cfg.Auth.User == coordUser || cfg.Auth.User == readerUser {
		return "", "", fmt.Errorf("embed: user name %q is reserved", cfg.Auth.User)
	}
	// JetStream is enabled per account only through the configuration
	// format (nats-server has no other way before Start); the accounts are
	// then completed here.
	records := recordsAccount + ": {}"
	if cfg.JetStream {
		records = recordsAccount + ": { jetstream: enabled }"
	}
	if err := opts.ProcessConfigString("accounts: { " + coordAccount + ": {}, " + records + ", " + clientAccount + ": {} }"); err != nil {
		return "", "", fmt.Errorf("embed: accounts: %w", err)
	}
	var coord, rec, clients *server.Account
	for _, a := range opts.Accounts {
		switch a.Name {
		case coordAccount:
			coord = a
		case recordsAccount:
			rec = a
		case clientAccount:
			clients = a
		}
	}
	if err := importServices(clients, coord, cfg.Clients.Services); err != nil {
		return "", "", err
	}
	if cfg.JetStream {
		// The client permissions say which of the API's subjects.
		if err := importServices(clients, rec, []string{"$JS.API.>", "$JS.ACK.>", "$JS.FC.>"}); err != nil {
			return "", "", err
		}
	}
	// Consumers deliver to inboxes in the records account; the
	// appliance's own connections use another prefix (Server.Connect).
	for _, subject := range append([]string{"_INBOX.>"}, cfg.Clients.Subjects...) {
		if err := rec.AddStreamExport(subject, []*server.Account{clients}); err != nil {
			return "", "", fmt.Errorf("embed: export %s: %w", subject, err)
		}
		if err := clients.AddStreamImport(rec, subject, ""); err != nil {
			return "", "", fmt.Errorf("embed: import %s: %w", subject, err)
		}
	}

	internal, coordPass = nuid.Next()+nuid.Next(), nuid.Next()+nuid.Next()
	only := map[string]struct{}{inProcess: {}}
	opts.Users = []*server.User{
		{Username: internalUser, Password: internal, Account: rec, AllowedConnectionTypes: only},
		{Username: coordUser, Password: coordPass, Account: coord, AllowedConnectionTypes: only},
	}
	perms := cfg.Clients.permissions()
	if cfg.Auth.User != "" {
		opts.Users = append(opts.Users, &server.User{Username: cfg.Auth.User, Password: cfg.Auth.Password, Account: clients, Permissions: perms})
	}
	for _, k := range cfg.Auth.NKeys {
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: k, Account: clients, Permissions: perms})
	}
	if !cfg.Auth.required() {
		// No credentials configured: a client gets the read-only login
		// without any (on loopback, or after its certificate verified).
		opts.Users = append(opts.Users, &server.User{Username: readerUser, Password: nuid.Next() + nuid.Next(), Account: clients, Permissions: perms})
		opts.NoAuthUser = readerUser
	}
	return internal, coordPass, nil
}

// importServices exports subjects from one account as services with any
// number of replies each, to the other only, which imports them under the
// same names.
func importServices(to, from *server.Account, subjects []string) error {
	for _, subject := range subjects {
		if err := from.AddServiceExportWithResponse(subject, server.Streamed, []*server.Account{to}); err != nil {
			return fmt.Errorf("embed: export %s: %w", subject, err)
		}
		if err := to.AddServiceImport(from, subject, subject); err != nil {
			return fmt.Errorf("embed: import %s: %w", subject, err)
		}
	}
	return nil
}
