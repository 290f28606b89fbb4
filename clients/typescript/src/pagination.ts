/** One page of a list, as the API answers it. */
export interface Page<Item> {
  readonly object: 'list'
  readonly data: Item[]
  readonly has_more: boolean
  /** Pass as `after` for the next page; null on the last one. */
  readonly next_cursor: string | null
}

/**
 * A list: `await` it for its first page, or `for await` it for every item of every page, fetched
 * one page at a time as the loop goes on.
 */
export class PagePromise<Item> implements PromiseLike<Page<Item>>, AsyncIterable<Item> {
  readonly #fetchPage: (after: string | undefined) => Promise<Page<Item>>
  readonly #after: string | undefined
  #first: Promise<Page<Item>> | undefined

  constructor (fetchPage: (after: string | undefined) => Promise<Page<Item>>, after?: string) {
    this.#fetchPage = fetchPage
    this.#after = after
  }

  #firstPage (): Promise<Page<Item>> {
    this.#first ??= this.#fetchPage(this.#after)
    return this.#first
  }

  then<A = Page<Item>, B = never> (onFulfilled?: ((page: Page<Item>) => A | PromiseLike<A>) | null, onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<A | B> {
    return this.#firstPage().then(onFulfilled, onRejected)
  }

  catch<B = never> (onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<Page<Item> | B> {
    return this.#firstPage().catch(onRejected)
  }

  finally (onFinally?: (() => void) | null): Promise<Page<Item>> {
    return this.#firstPage().finally(onFinally)
  }

  /** Every page, from the first on. */
  async * pages (): AsyncGenerator<Page<Item>> {
    let page = await this.#firstPage()
    yield page
    while (page.has_more && page.next_cursor !== null) {
      page = await this.#fetchPage(page.next_cursor)
      yield page
    }
  }

  async * [Symbol.asyncIterator] (): AsyncGenerator<Item> {
    for await (const page of this.pages()) yield * page.data
  }
}
