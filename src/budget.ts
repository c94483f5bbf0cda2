/**
 * A memory budget shared by many connections: the bytes they hold for
 * inbound messages that have begun but not ended. Each connection bounds its
 * own unread bytes and message size; the budget bounds their sum, so that
 * ten thousand peers each holding an unfinished message just under the read
 * limit cannot add up to an out-of-memory.
 */

import { checkLimit } from "./conn-options.js";

/** The default budget, shared by every server connection in the process: 64 MiB. */
export const DEFAULT_INBOUND_BUDGET = 64 * 1024 * 1024;

/**
 * What a connection shows the budget. The budget keeps its accounts in a
 * list, oldest holder first, linked through the accounts themselves.
 * @internal
 */
export interface BudgetAccount {
  /** Bytes this account has charged. */
  budgeted: number;
  budgetPrev: BudgetAccount | undefined;
  budgetNext: BudgetAccount | undefined;
  /** shedForBudget must release everything the account charged, at once. */
  shedForBudget(): void;
}

/**
 * InboundBudget bounds the bytes held, across every connection that shares
 * it, for inbound messages that have begun but not ended and that no
 * `reader()` stream is consuming: bytes no application code can free, since
 * only the rest of the message (from the peer) completes them. Complete
 * messages waiting to be read are not counted (each connection pauses its
 * socket at 256 KiB of them, and reading them frees them).
 *
 * When a charge takes the total past `limit`, the budget sheds connections,
 * oldest holder first among those holding at least the average, until the
 * total is back under the limit: each is closed with 1013 (Try Again Later)
 * and releases what it held at once. A peer that trickles a message in
 * (slowloris) is thus the first to go, and honest peers that send their
 * messages promptly keep being served.
 *
 * `accept` and `serve` use one process-wide budget of 64 MiB by default
 * (`InboundBudget.shared`); `dial` uses none unless given one. A message
 * larger than the budget can never be received whole with `read`: keep
 * `limit` above the largest `readLimit` you allow. `new InboundBudget(Infinity)`
 * turns the bound off. Throws a RangeError for a limit that is not a
 * non-negative number.
 */
export class InboundBudget {
  /** The budget `accept` and `serve` use when given none: 64 MiB, for the whole process. */
  static readonly shared = new InboundBudget(DEFAULT_INBOUND_BUDGET);

  /** The most bytes the accounts may hold together. */
  readonly limit: number;
  private usedBytes = 0;
  private holderCount = 0;
  private shedCount = 0;
  private shedding = false;
  private first: BudgetAccount | undefined;
  private last: BudgetAccount | undefined;

  constructor(limit: number = DEFAULT_INBOUND_BUDGET) {
    this.limit = checkLimit("inbound budget", limit);
  }

  /** Bytes held now, over all connections. */
  get used(): number {
    return this.usedBytes;
  }

  /** How many connections hold bytes now. */
  get holders(): number {
    return this.holderCount;
  }

  /** How many connections the budget has closed with 1013 so far. */
  get shed(): number {
    return this.shedCount;
  }

  /**
   * @internal
   * adjust adds `delta` bytes (negative: releases) to `account`, then sheds
   * connections while the total is over the limit.
   */
  adjust(account: BudgetAccount, delta: number): void {
    if (delta === 0 || (delta < 0 && account.budgeted === 0)) return;
    if (account.budgeted === 0) this.link(account);
    // A release takes back at most what the account holds.
    const applied = delta < 0 ? -Math.min(-delta, account.budgeted) : delta;
    account.budgeted += applied;
    this.usedBytes += applied;
    if (account.budgeted === 0) this.unlink(account);
    if (delta > 0 && this.usedBytes > this.limit && !this.shedding) this.shedOverflow();
  }

  /**
   * shedOverflow closes holders until the total fits: each time the oldest
   * one holding at least the average, which exists whenever the total is
   * over the limit (the largest holder holds at least the average).
   */
  private shedOverflow(): void {
    this.shedding = true;
    try {
      while (this.usedBytes > this.limit && this.first !== undefined) {
        const average = this.usedBytes / this.holderCount;
        let account = this.first;
        while (account.budgeted < average && account.budgetNext !== undefined) account = account.budgetNext;
        this.shedCount++;
        account.shedForBudget();
        // An account that did not release everything must not stall this loop.
        if (account.budgeted > 0) this.adjust(account, -account.budgeted);
      }
    } finally {
      this.shedding = false;
    }
  }

  private link(account: BudgetAccount): void {
    account.budgetPrev = this.last;
    account.budgetNext = undefined;
    if (this.last === undefined) this.first = account;
    else this.last.budgetNext = account;
    this.last = account;
    this.holderCount++;
  }

  private unlink(account: BudgetAccount): void {
    const { budgetPrev: prev, budgetNext: next } = account;
    if (prev === undefined) this.first = next;
    else prev.budgetNext = next;
    if (next === undefined) this.last = prev;
    else next.budgetPrev = prev;
    account.budgetPrev = account.budgetNext = undefined;
    this.holderCount--;
  }
}
