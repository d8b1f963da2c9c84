"""Getting pages: the crawler (URL policy, crawl state, fetching) and the URL filter."""
