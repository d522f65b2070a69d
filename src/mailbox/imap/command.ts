// The shape of an IMAP command handler. Generic in the session type so that this module, the session (which
// runs commands) and the command table (whose handlers act on the session) do not import one another in a circle.
import type { Reader } from './parser.js';

export type CommandState = 'notauth' | 'auth' | 'selected';

export interface Command<Session> {
  states: CommandState[];
  /** Also valid as `UID <command>`. */
  uid?: boolean;
  /** Returns the text of the tagged OK (or throws ImapError / ParseError). */
  run(s: Session, r: Reader, uid: boolean): Promise<string | void>;
}
